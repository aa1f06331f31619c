//! Probes: one write right after a fault ends, timed until the list shows
//! it (and, after a search outage, until a search finds it). The time is
//! how long the system took to heal from that fault.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;

use crate::{
    client::Api,
    flag::Flag,
    load::{Outcome, write},
    record::Ledger,
};

const POLL: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Probe {
    pub resumed_after: Option<f64>,
    pub searchable_after: Option<f64>,
}

pub(crate) struct Prober {
    pub api: Arc<Api>,
    pub ledger: Arc<Ledger>,
    /// The chat probes write to, apart from the load's.
    pub chat: i64,
    pub t0: Instant,
    /// Probe writes still retrying give up once set.
    pub writes_closed: Flag,
    /// Probes still polling give up once set.
    pub finish: Flag,
    tasks: Mutex<Vec<(usize, JoinHandle<Probe>)>>,
    writing: AtomicUsize,
    seq: AtomicU64,
}

impl Prober {
    pub fn new(api: Arc<Api>, ledger: Arc<Ledger>, chat: i64, t0: Instant) -> Prober {
        Prober {
            api,
            ledger,
            chat,
            t0,
            writes_closed: Flag::new(),
            finish: Flag::new(),
            tasks: Mutex::default(),
            writing: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
        }
    }

    /// Probes the fault recorded as window `window`, which ended at
    /// `ended`.
    pub fn spawn(self: &Arc<Self>, window: usize, ended: Instant, searchable: bool) {
        let me = self.clone();
        self.writing.fetch_add(1, Ordering::SeqCst);
        let task = tokio::spawn(async move {
            let probe = me.run(window, ended, searchable).await;
            probe.unwrap_or_default()
        });
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((window, task));
    }

    async fn run(&self, window: usize, ended: Instant, searchable: bool) -> Option<Probe> {
        // A word of its own, short enough to be one n-gram term, so a
        // search finds this message and no other.
        let tag = format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let body = format!("{tag} probe after fault {window}");
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let outcome = write(
            &self.api,
            &self.ledger,
            self.t0,
            self.chat,
            body.clone(),
            seq,
            seq as usize,
            &self.writes_closed,
        )
        .await;
        self.writing.fetch_sub(1, Ordering::SeqCst);
        let Outcome::Told(number) = outcome else {
            return None;
        };
        let mut probe = Probe::default();
        let mut poll = 0usize;
        while !self.finish.is_set() {
            if let Ok((items, _)) = self.api.list_page(poll, self.chat, number - 1).await
                && items
                    .first()
                    .is_some_and(|(n, b)| *n == number && *b == body)
            {
                probe.resumed_after = Some(ended.elapsed().as_secs_f64());
                break;
            }
            poll += 1;
            self.pause().await;
        }
        while searchable && probe.resumed_after.is_some() && !self.finish.is_set() {
            if let Ok(found) = self.api.search(poll, self.chat, &tag).await
                && found.contains(&number)
            {
                probe.searchable_after = Some(ended.elapsed().as_secs_f64());
                break;
            }
            poll += 1;
            self.pause().await;
        }
        Some(probe)
    }

    async fn pause(&self) {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = self.finish.wait() => {}
        }
    }

    /// Waits until no probe is still trying to write, so the check sees
    /// every probe the system acknowledged.
    pub async fn writes_settled(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.writing.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every probe's result, by window. Call after `finish` is set.
    pub async fn results(&self) -> Vec<(usize, Probe)> {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        let mut out = Vec::with_capacity(tasks.len());
        for (window, task) in tasks {
            out.push((window, task.await.unwrap_or_default()));
        }
        out
    }
}
