//! What the workers tell the dashboard, through the database:
//! - per-minute figures: jobs done and failed, and histograms of each
//!   job's wait (ready to claimed), run (claimed to acked) and write lag
//!   (accepted by the API to persisted or indexed). They are gathered in
//!   memory and written once a second, so the hot path only adds to a map;
//! - each worker's heartbeat: in flight, processed and failed, every few
//!   seconds, and its removal on a clean stop.
//!
//! Figures gathered in the second before a crash are lost: they feed a
//! chart, and are not worth a write per job.
use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chat_ops::{
    pulse::{self, Field, Histogram, Increments, LagStage},
    workers::{self, WorkerBeat},
};
use chat_queue::{Claimed, QueueName};
use sea_orm::DatabaseConnection;

const FLUSH_EVERY: Duration = Duration::from_secs(1);
const BEAT_EVERY: Duration = Duration::from_secs(5);

static GATHERED: OnceLock<Arc<Mutex<Increments>>> = OnceLock::new();

/// Starts writing the figures gathered in this process to `db`. Until it
/// is called, figures are dropped (tests that run a worker without a pool).
pub fn install(db: DatabaseConnection) {
    let gathered = Arc::new(Mutex::new(Increments::default()));
    if GATHERED.set(gathered.clone()).is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let batch = std::mem::take(&mut *gathered.lock().unwrap());
            if batch.is_empty() {
                continue;
            }
            if let Err(e) = pulse::add(&db, &batch).await {
                tracing::debug!(error = %e, "could not write the job figures");
            }
        }
    });
}

fn gather(f: impl FnOnce(&mut Increments)) {
    if let Some(g) = GATHERED.get() {
        f(&mut g.lock().unwrap());
    }
}

/// Jobs acked now: one done each, with their wait and run.
pub(crate) fn done(queue: QueueName, jobs: &[Claimed]) {
    let now = chat_links::now_millis();
    let minute = now.div_euclid(60_000);
    let series = queue.as_str();
    gather(|g| {
        g.add(series, minute, Field::DONE, jobs.len() as i64);
        for job in jobs {
            let wait = (job.claimed_at - job.ready_at).max(0) as u64;
            g.sample(series, minute, Histogram::Wait, wait);
            let run = (now - job.claimed_at).max(0) as u64;
            g.sample(series, minute, Histogram::Run, run);
        }
    });
}

/// A failed attempt, whether it will be retried or was buried.
pub(crate) fn failed(queue: QueueName) {
    gather(|g| g.add(queue.as_str(), pulse::minute_now(), Field::FAILED, 1));
}

/// Rows that reached `stage`, each `ms` after the API accepted it.
pub(crate) fn lags(stage: LagStage, ms: impl Iterator<Item = u64>) {
    let minute = pulse::minute_now();
    gather(|g| {
        for ms in ms {
            g.sample(stage.as_str(), minute, Histogram::Lag, ms);
        }
    });
}

/// One worker's running figures, shared by its feed and its settler.
#[derive(Debug, Default)]
pub struct Tally {
    handed: AtomicU64,
    settled: AtomicU64,
    failed: AtomicU64,
    /// Jobs handed back unrun because their backend was down.
    returned: AtomicU64,
    /// Why the worker is paused, if it is: the outage it waits out.
    paused: Mutex<Option<String>>,
}

impl Tally {
    /// A job handed to a handler.
    pub(crate) fn started(&self) {
        self.handed.fetch_add(1, Ordering::Relaxed);
    }

    /// A job whose handler returned; `ok` false for a failed attempt.
    pub(crate) fn settled(&self, ok: bool) {
        self.settled.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A job handed back unrun: it leaves the worker's hands, but was
    /// neither processed nor failed.
    pub(crate) fn handed_back(&self) {
        self.returned.fetch_add(1, Ordering::Relaxed);
    }

    /// The worker waits for a backend (`Some(why)`), or works (`None`).
    pub(crate) fn pause(&self, why: Option<String>) {
        *self.paused.lock().unwrap() = why;
    }

    fn beat(&self, name: &str, queue: QueueName, started_at: i64) -> WorkerBeat {
        let settled = self.settled.load(Ordering::Relaxed) + self.returned.load(Ordering::Relaxed);
        WorkerBeat {
            name: name.to_owned(),
            queue: queue.as_str().to_owned(),
            host: host(),
            pid: std::process::id().into(),
            started_at,
            beat_at: chat_links::now_millis(),
            in_flight: self.handed.load(Ordering::Relaxed).saturating_sub(settled) as i64,
            processed: self.settled.load(Ordering::Relaxed) as i64,
            failed: self.failed.load(Ordering::Relaxed) as i64,
            paused: self.paused.lock().unwrap().clone(),
        }
    }
}

fn host() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    })
    .clone()
}

/// Registers the worker `name` and refreshes its heartbeat until the
/// returned guard is dropped, which unregisters it.
pub(crate) fn heartbeat(
    db: DatabaseConnection,
    name: String,
    queue: QueueName,
    tally: Arc<Tally>,
) -> Heartbeat {
    let started_at = chat_links::now_millis();
    let task = {
        let (db, name) = (db.clone(), name.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(BEAT_EVERY);
            loop {
                tick.tick().await;
                if let Err(e) = workers::beat(&db, &tally.beat(&name, queue, started_at)).await {
                    tracing::debug!(worker = %name, error = %e, "heartbeat failed");
                }
            }
        })
    };
    Heartbeat { db, name, task }
}

pub(crate) struct Heartbeat {
    db: DatabaseConnection,
    name: String,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Stops beating and removes the worker from the registry.
    pub(crate) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        if let Err(e) = workers::gone(&self.db, &self.name).await {
            tracing::debug!(worker = %self.name, error = %e, "could not unregister");
        }
    }
}
