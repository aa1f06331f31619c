//! Periodic work, on apalis-cron: the incremental and full count
//! recounts, housekeeping of the job queues' history and of expired
//! read-your-writes entries, and the search drift check.
//!
//! apalis-cron fires on every replica; this crate makes each tick run
//! once across all of them by racing on the tick's run record (see
//! [`chat_ops::runs`]). It owns *when* work runs and the run
//! history; *what* a run does (the SQL, the trims, the drift check) lives
//! in `chat-store`, `chat-queue` and `chat-search`, reached through the
//! [`SchedulerDeps`] the binary hands it. It must not know about HTTP, the
//! worker pools or apalis's job backends.
mod deps;
mod heartbeat;
pub mod schedule;
pub mod tasks;
#[cfg(feature = "test-switches")]
mod test_switches;

use std::{sync::Arc, time::Duration};

use chat_ops::runs;
use chat_queue::Retention;
pub use deps::SchedulerDeps;
use tokio::sync::watch;

pub use tasks::Task;

/// How often a running task tells other replicas its owner is alive.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Missed heartbeats after which a run counts as abandoned.
const STALE_AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub counts_every: Duration,
    pub counts_full_every: Duration,
    pub housekeeping_every: Duration,
    /// `None` turns the periodic search drift check off.
    pub search_drift_every: Option<Duration>,
    pub retention: Retention,
    /// Runs kept per task in the history.
    pub history: u64,
    /// Names this process in run records: `host:pid` by default.
    pub owner: String,
}

impl SchedulerConfig {
    /// How often `task` runs; `None` when it is turned off.
    pub fn every(&self, task: Task) -> Option<Duration> {
        match task {
            Task::Counts => Some(self.counts_every),
            Task::CountsFull => Some(self.counts_full_every),
            Task::Housekeeping => Some(self.housekeeping_every),
            Task::SearchDrift => self.search_drift_every,
        }
    }
}

/// `host:pid`, so an operator can tell which process ran what.
pub fn default_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Runs every task on its schedule until `shutdown` turns true.
pub async fn run(deps: SchedulerDeps, config: SchedulerConfig, shutdown: watch::Receiver<bool>) {
    let config = Arc::new(config);
    let mut tasks = tokio::task::JoinSet::new();
    for task in Task::ALL {
        if task == Task::SearchDrift && !deps.search.configured() {
            tracing::warn!(
                "search is not configured in this process (no ELASTICSEARCH_URL): the search \
                 drift check does not run"
            );
            continue;
        }
        let Some(every) = config.every(task) else {
            continue;
        };
        let (b, c, s) = (deps.clone(), config.clone(), shutdown.clone());
        tasks.spawn(run_task(b, c, task, every, s));
    }
    tracing::info!(owner = %config.owner, "scheduler started");
    while tasks.join_next().await.is_some() {}
}

async fn run_task(
    deps: SchedulerDeps,
    config: Arc<SchedulerConfig>,
    task: Task,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = schedule::Ticks::every(every.as_secs());
    loop {
        let tick = tokio::select! {
            tick = ticks.next() => tick,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let Some(tick) = tick else { return };
        if let Err(e) = run_tick(&deps, &config, task, tick, &mut shutdown).await {
            tracing::warn!(task = task.name(), tick, error = %e, "scheduler bookkeeping failed");
        }
    }
}

/// Runs `task` for `tick` if this replica wins the tick, recording it.
async fn run_tick(
    deps: &SchedulerDeps,
    config: &SchedulerConfig,
    task: Task,
    tick: i64,
    shutdown: &mut watch::Receiver<bool>,
) -> chat_links::error::Result<()> {
    let db = &deps.writer;
    let stale = chat_links::now_millis() - STALE_AFTER.as_millis() as i64;
    let abandoned = runs::abandon_stale(db, stale).await?;
    if abandoned > 0 {
        tracing::warn!(
            runs = abandoned,
            "marked runs of a dead scheduler abandoned"
        );
    }
    let Some(run) = runs::begin(db, task.name(), tick, &config.owner).await? else {
        tracing::debug!(task = task.name(), tick, "another scheduler has this tick");
        return Ok(());
    };
    let work = async {
        #[cfg(feature = "test-switches")]
        tokio::time::sleep(test_switches::hold()).await;
        tasks::run(task, deps, config).await
    };
    let started = std::time::Instant::now();
    let outcome = tokio::select! {
        outcome = heartbeat::while_beating(db, run, task, HEARTBEAT, work) => outcome,
        // Every task is a recomputation that the next tick repeats, and a
        // transaction left unfinished rolls back: a long recount must not
        // hold the process past its shutdown deadline.
        _ = shutdown.wait_for(|stop| *stop) => Err(chat_links::error::StoreError::Other(
            "stopped by shutdown before it finished; the next tick runs it again".into(),
        )),
    };
    let finished = match outcome {
        Ok(done) => {
            tracing::info!(
                task = task.name(),
                tick,
                rows = done.rows_touched,
                "run finished"
            );
            runs::Finished {
                rows_touched: done.rows_touched,
                detail: Some(done.detail),
                error: None,
            }
        }
        Err(e) => {
            tracing::warn!(task = task.name(), tick, error = %e, "run failed");
            runs::Finished {
                rows_touched: 0,
                detail: None,
                error: Some(e.to_string()),
            }
        }
    };
    chat_observability::metrics::metrics().scheduler_run(
        task.name(),
        if finished.error.is_none() {
            "ok"
        } else {
            "failed"
        },
        started.elapsed().as_secs_f64(),
    );
    runs::finish(db, run, finished).await?;
    runs::trim(db, task.name(), config.history).await?;
    Ok(())
}
