//! The durable job log that sits between the API and the worker pools.
//!
//! Two implementations share one contract:
//! - [`RedisStreamQueue`]: a Redis stream per queue with a consumer group,
//!   a retry ZSET and a capped dead-letter stream;
//! - [`SqliteQueue`]: one `queue_jobs` table, leased by UPDATE … RETURNING.
//!
//! Settled jobs are kept for a while as history: done jobs up to a cap
//! and a retention, dead jobs for a longer retention; [`JobQueue::trim`]
//! enforces the retentions, and the scheduler's housekeeping calls it.
//!
//! The contract is at-least-once: a claimed job stays owned until it is
//! acked, retried or buried, and a claim that is never settled (its worker
//! died) is handed to another consumer after the lease (`claim_idle`)
//! runs out. Consumers must therefore be idempotent.
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;

mod listing;
mod redis_streams;
mod sqlite_table;

pub use listing::{JobPage, JobRecord, JobSearch, JobState, Resource, contains_folded};

pub use redis_streams::{DONE_PAYLOAD_MAX, RedisStreamQueue};
pub use sqlite_table::SqliteQueue;

/// The queues this system runs. Each carries one job type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueName {
    Chats,
    Messages,
    /// Messages to (re)index for search, enqueued once their rows commit.
    Index,
}

impl QueueName {
    pub const ALL: [QueueName; 3] = [QueueName::Chats, QueueName::Messages, QueueName::Index];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Chats => "chats",
            QueueName::Messages => "messages",
            QueueName::Index => "index",
        }
    }

    /// Whether a job of this queue can hold the only copy of a write a
    /// client was told was accepted (a chat or message not yet in the
    /// database). Such a job is never dropped by a retention or a cap: once
    /// dead, it waits for an operator. An index job only repeats what the
    /// database already holds (the drift check repairs the index).
    pub fn holds_accepted_writes(self) -> bool {
        matches!(self, QueueName::Chats | QueueName::Messages)
    }

    /// The name of a span that sends a job here, in OpenTelemetry's
    /// messaging form (`send <queue>`): the API sends chats and messages,
    /// and the message workers send index jobs.
    pub fn send_span_name(self) -> &'static str {
        match self {
            QueueName::Chats => "send chats",
            QueueName::Messages => "send messages",
            QueueName::Index => "send index",
        }
    }
}

/// Records one search reads at a time.
const SEARCH_PAGE: usize = 500;

/// A search by reading the newest `scan` records of each state, a page at
/// a time, until `limit` match.
pub(crate) async fn scan_newest<Q: JobQueue + ?Sized>(
    q: &Q,
    queue: QueueName,
    search: &JobSearch,
    scan: usize,
    limit: usize,
) -> Result<Vec<JobRecord>> {
    let mut found = Vec::new();
    for state in JobState::ALL {
        let mut cursor: Option<String> = None;
        let mut seen = 0;
        while seen < scan && found.len() < limit {
            let page = q
                .jobs(
                    queue,
                    state,
                    cursor.as_deref(),
                    SEARCH_PAGE.min(scan - seen),
                )
                .await?;
            seen += page.jobs.len();
            found.extend(page.jobs.into_iter().filter(|j| search.matches(queue, j)));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    found.truncate(limit);
    Ok(found)
}

/// One failed attempt, kept with the job until it succeeds or dies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub error: String,
    /// The consumer that ran the attempt (absent in records written before
    /// it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// How long the attempt ran, from its claim to its failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
}

/// A job a consumer owns until it settles it.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// Queue-specific handle used to settle the job.
    pub id: String,
    /// The job's JSON payload, as enqueued.
    pub payload: String,
    /// 1 on first delivery; grows with each retry.
    pub attempt: u32,
    pub failures: Vec<Failure>,
    /// The W3C `traceparent` of the span that enqueued the job, kept
    /// through retries, so the worker's spans continue that trace.
    pub trace: Option<String>,
    /// When the job last became claimable (enqueued, or due again after a
    /// backoff), in ms since the epoch: the start of its wait in the queue.
    pub ready_at: i64,
    /// When this delivery was claimed, in ms since the epoch: the end of
    /// its wait and the start of its run.
    pub claimed_at: i64,
    /// When the job was first enqueued, in ms since the epoch; kept
    /// through retries.
    pub enqueued_at: i64,
    /// The consumer that claimed this delivery.
    pub worker: String,
}

impl Claimed {
    pub fn with_failure(&self, error: &str) -> Vec<Failure> {
        let mut failures = self.failures.clone();
        let at = crate::now();
        failures.push(Failure {
            attempt: self.attempt,
            at,
            error: error.to_owned(),
            worker: Some(self.worker.clone()),
            ms: Some((at.timestamp_millis() - self.claimed_at).max(0) as u64),
        });
        failures
    }
}

/// Exact counts per state, for health checks and the dashboard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Waiting to be claimed.
    pub ready: u64,
    /// Claimed and not yet settled.
    pub in_flight: u64,
    /// Failed, waiting for their backoff to pass.
    pub retrying: u64,
    /// Out of attempts; kept with their failures.
    pub dead: u64,
    /// Finished and still within the done retention.
    pub done: u64,
}

/// How long settled jobs stay visible before housekeeping removes them.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub done: Duration,
    /// Longer than `done` in practice: a dead job waits for an operator.
    pub dead: Duration,
}

/// What one [`JobQueue::trim`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Trimmed {
    pub done: u64,
    pub dead: u64,
}

/// A buried job as the dashboard shows it.
#[derive(Clone, Debug, Serialize)]
pub struct DeadJob {
    /// The handle to revive or discard it by.
    pub id: String,
    /// The id it had while live (the same as `id` on SQLite).
    pub job_id: String,
    /// When it was buried, in ms since the epoch.
    pub buried_at: i64,
    pub payload: String,
    pub attempt: u32,
    pub failures: Vec<Failure>,
    pub trace: Option<String>,
    /// When it was first enqueued, where known.
    pub enqueued_at: Option<i64>,
}

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Appends a job; returns once the queue has durably accepted it.
    async fn enqueue(&self, queue: QueueName, payload: String) -> Result<()> {
        self.enqueue_traced(queue, payload, None).await
    }

    /// Appends a job that carries `trace`, the W3C `traceparent` of the
    /// span sending it. The queue stores it opaquely beside the payload.
    async fn enqueue_traced(
        &self,
        queue: QueueName,
        payload: String,
        trace: Option<String>,
    ) -> Result<()>;

    /// Takes up to `max` jobs for `consumer`, waiting up to `wait` when
    /// none is ready. Jobs whose lease ran out are taken over first.
    async fn claim(
        &self,
        queue: QueueName,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>>;

    /// Settles jobs as done, keeping a record of each in the queue's
    /// history. Acking a job that is no longer owned (it was already acked,
    /// or taken over) is a no-op, never an error, and records nothing new.
    async fn ack(&self, queue: QueueName, jobs: &[Claimed]) -> Result<()>;

    /// Settles a job as failed; it comes back after `delay`.
    async fn retry(
        &self,
        queue: QueueName,
        job: &Claimed,
        error: &str,
        delay: Duration,
    ) -> Result<()>;

    /// Settles a job as failed for good, keeping its failure history.
    async fn bury(&self, queue: QueueName, job: &Claimed, error: &str) -> Result<()>;

    /// Hands jobs back to be claimed again after `delay`, as they were: no
    /// attempt is spent and no failure recorded. For jobs that could not
    /// run because a backend they need is down, which says nothing about
    /// the jobs themselves.
    async fn defer(&self, queue: QueueName, jobs: &[Claimed], delay: Duration) -> Result<()>;

    /// Extends the lease of jobs `consumer` still holds, so a job that waits
    /// longer than the lease (a slow batch, a backend outage) is not taken
    /// over from a live worker. Jobs no longer held by `consumer` are left
    /// alone. Returns how many were renewed.
    async fn renew(&self, queue: QueueName, consumer: &str, ids: &[String]) -> Result<usize>;

    async fn stats(&self, queue: QueueName) -> Result<QueueStats>;

    /// The newest buried jobs, newest first.
    async fn dead_jobs(&self, queue: QueueName, limit: usize) -> Result<Vec<DeadJob>>;

    /// One buried job by its handle ([`DeadJob::id`]).
    async fn dead_job(&self, queue: QueueName, id: &str) -> Result<Option<DeadJob>>;

    /// Puts a buried job back in the queue, atomically: it keeps its
    /// payload, trace context and failure history, and starts a fresh
    /// attempt budget. Returns its handle as a pending job (a new one on
    /// Redis, where the revived job is a new stream entry), so what was
    /// done to it can be found under the name it goes on with; `None`
    /// when no such dead job exists (already revived, discarded or
    /// trimmed), so a double click does nothing.
    async fn revive(&self, queue: QueueName, id: &str) -> Result<Option<String>>;

    /// Deletes a buried job for good; `false` when there was none.
    async fn discard(&self, queue: QueueName, id: &str) -> Result<bool>;

    /// Makes a job that waits out its retry backoff due now, atomically and
    /// as it is: no attempt is spent and its failure history stays. `id` is
    /// its [`JobRecord::id`] as a retrying job. `false` when no such job
    /// waits (it already ran, was cancelled, or the handle is unknown).
    async fn retry_now(&self, queue: QueueName, id: &str) -> Result<bool>;

    /// Deletes a job that waits, to be claimed or for its retry, for good
    /// and atomically. `state` is where the operator saw it
    /// ([`JobState::Pending`] or [`JobState::Retrying`]) and `id` its
    /// [`JobRecord::id`] there. A job that has moved on since (a worker
    /// claimed it, it settled) is left alone: in flight, it is never
    /// cancelled under its worker. `false` when nothing was deleted.
    async fn cancel(&self, queue: QueueName, state: JobState, id: &str) -> Result<bool>;

    /// One page of `state`'s jobs, newest first, continuing after
    /// `cursor` (a previous page's `next`).
    async fn jobs(
        &self,
        queue: QueueName,
        state: JobState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage>;

    /// One job by its handle ([`JobRecord::id`]) within `state`; `None`
    /// when it has moved on (its handle in the new state differs).
    async fn job(&self, queue: QueueName, state: JobState, id: &str) -> Result<Option<JobRecord>>;

    /// Up to `limit` jobs matching `search`, newest first within each
    /// state, looking at no more than the newest `scan` records of each
    /// state: a bounded scan, never the whole history.
    async fn search(
        &self,
        queue: QueueName,
        search: &JobSearch,
        scan: usize,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        scan_newest(self, queue, search, scan, limit).await
    }

    /// Removes done records older than their retention (and, for a backend
    /// that does not cap them as it writes, done records beyond the cap),
    /// and dead records older than theirs, except on queues whose jobs
    /// [hold accepted writes](QueueName::holds_accepted_writes): those stay
    /// until an operator retries or discards them.
    async fn trim(&self, queue: QueueName, retention: Retention) -> Result<Trimmed>;

    /// Answers when the queue's server answers.
    async fn ping(&self) -> Result<()>;

    /// What the queue runs on, as spans name it (`messaging.system`).
    fn system(&self) -> &'static str;

    /// Called when a consumer shuts down cleanly: the jobs it still holds
    /// (claimed but never started) become claimable by others at once,
    /// instead of after their lease runs out.
    async fn retire(&self, queue: QueueName, consumer: &str) -> Result<()>;
}
