//! A job as the queue hands it out and keeps it: its claim, its failures,
//! and the counts and retentions of a queue.
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
        let at = chat_links::now();
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

/// What one [`JobHistory::trim`] removed.
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
