//! A one-way signal that tasks can poll or await.

use std::sync::Arc;

use tokio::sync::watch;

/// Set once, never cleared. A watch channel rather than a bare atomic, so
/// a task sleeping on a backoff wakes as soon as the phase it is in ends.
#[derive(Clone)]
pub(crate) struct Flag(Arc<watch::Sender<bool>>);

impl Flag {
    pub fn new() -> Flag {
        Flag(Arc::new(watch::channel(false).0))
    }

    pub fn set(&self) {
        self.0.send_replace(true);
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|set| *set).await;
    }
}
