//! The queues operators paused on the dashboard, as this process's
//! workers see them: read from the database once a second, so a pause
//! reaches every worker process within about a second and outlives them
//! all. A worker of a paused queue claims nothing; the API keeps
//! accepting, and the backlog waits in the queue.
use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use chat_ops::pauses::{self, Pause};
use chat_queue::QueueName;
use sea_orm::DatabaseConnection;
use tokio::sync::watch;

/// How often the pauses are read again.
const REFRESH: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct OperatorPauses {
    /// `None` until the first read: until then no one knows whether the
    /// queue is paused, and a worker that claimed could run a paused
    /// queue's jobs for a moment after every restart.
    current: RwLock<Option<Vec<Pause>>>,
}

impl OperatorPauses {
    /// Reads the pauses, then keeps them fresh until `shutdown`. A failed
    /// read keeps the last known pauses: a database outage neither pauses
    /// nor resumes anything. The first read is awaited, so workers that
    /// start with the process start claiming at once.
    pub async fn watch(db: DatabaseConnection, mut shutdown: watch::Receiver<bool>) -> Arc<Self> {
        let pauses = Arc::new(Self::default());
        pauses.read(&db).await;
        let kept = pauses.clone();
        tokio::spawn(async move {
            while !*shutdown.borrow() {
                tokio::select! {
                    _ = tokio::time::sleep(REFRESH) => {}
                    _ = shutdown.changed() => {}
                }
                kept.read(&db).await;
            }
        });
        pauses
    }

    async fn read(&self, db: &DatabaseConnection) {
        match pauses::all(db).await {
            Ok(now) => *self.current.write().unwrap() = Some(now),
            Err(e) => tracing::debug!(error = %e, "could not read the queue pauses"),
        }
    }

    /// Pauses known to be none, for tests that claim without a database
    /// to read them from.
    #[cfg(test)]
    pub(crate) fn none() -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Some(Vec::new())),
        })
    }

    /// Whether the pauses were read at least once.
    pub fn known(&self) -> bool {
        self.current.read().unwrap().is_some()
    }

    /// Why `queue` is paused, if it is.
    pub fn why(&self, queue: QueueName) -> Option<String> {
        self.current
            .read()
            .unwrap()
            .iter()
            .flatten()
            .find(|p| p.queue == queue.as_str())
            .map(|p| format!("paused by {} on the dashboard", p.paused_by))
    }

    /// Waits until the next read could have changed the answer: soon
    /// while the pauses are still unknown (the first read failed), half a
    /// refresh otherwise.
    pub async fn tick(&self) {
        let wait = if self.known() {
            REFRESH / 2
        } else {
            REFRESH / 20
        };
        tokio::time::sleep(wait).await;
    }
}
