//! What operators see of a queue and do to its jobs: counts, pages of each
//! state, one job, search, and the repairs (revive, discard, retry now,
//! cancel), plus the housekeeping that bounds the history.
use async_trait::async_trait;
use chat_links::error::Result;

use crate::{
    DeadJob, JobPage, JobRecord, JobSearch, JobState, QueueName, QueueStats, Retention, Trimmed,
};

/// Every queue keeps this history; the dashboard, `/metrics`, the probes and
/// the scheduler's housekeeping need nothing else of it.
#[async_trait]
pub trait JobHistory: Send + Sync + 'static {
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
}

/// Records one search reads at a time.
const SEARCH_PAGE: usize = 500;

/// A search by reading the newest `scan` records of each state, a page at
/// a time, until `limit` match.
pub(crate) async fn scan_newest<Q: JobHistory + ?Sized>(
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
