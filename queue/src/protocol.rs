//! The worker protocol: what the intake and the worker pools do to jobs.
use std::time::Duration;

use async_trait::async_trait;
use chat_links::error::Result;

use crate::{Claimed, JobHistory, QueueName};

/// A durable queue as its producers and consumers use it. Every queue also
/// keeps its [`JobHistory`], so a `dyn JobQueue` can be handed on as a
/// `dyn JobHistory` to whoever only reads or repairs.
#[async_trait]
pub trait JobQueue: JobHistory {
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

    /// Called when a consumer shuts down cleanly: the jobs it still holds
    /// (claimed but never started) become claimable by others at once,
    /// instead of after their lease runs out.
    async fn retire(&self, queue: QueueName, consumer: &str) -> Result<()>;
}
