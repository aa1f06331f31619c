//! Settling a job once its handler has returned.
//!
//! - success: the job's id goes to an [`Acker`], which acks in batches;
//!   the handler only returns after its batch committed, so an ack always
//!   follows the commit. A crash between the two redelivers the job, and
//!   the version-guarded upsert makes the replay a no-op.
//! - failure with attempts left: the job is retried after an exponential
//!   backoff with jitter (`RETRY_BASE_MS` doubling up to `RETRY_MAX_MS`,
//!   each step stretched by a random 0–100% of itself).
//! - failure on the last attempt: the job is buried with its history.
use std::{sync::Arc, time::Duration};

use apalis_core::{error::BoxDynError, task::ExecutionContext, worker::ext::ack::Acknowledge};
use backon::{BackoffBuilder, ExponentialBuilder};
use chat_store::{
    StoreError,
    queue::{Claimed, JobQueue, QueueName},
};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use crate::{
    pulse::{self, Tally},
    trace::{JobOrigin, Origin},
};

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The pause before the attempt after `attempt`: the doubled step (capped
    /// at `max`) stretched by a random 0–100% of itself, so a
    /// burst of failures does not come back as a burst.
    pub fn delay(&self, attempt: u32) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.max)
    }
}

/// Batches acks so a batch of 500 jobs costs one queue round trip.
#[derive(Clone)]
pub struct Acker {
    tx: mpsc::UnboundedSender<AckMsg>,
}

enum AckMsg {
    /// The origin rides along so the job's span ends once its ack is
    /// written, not before.
    Ack(Claimed, JobOrigin),
    /// Answered once every ack sent before it has been written.
    Flush(oneshot::Sender<()>),
}

impl Acker {
    pub fn spawn(queue: Arc<dyn JobQueue>, name: QueueName) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<AckMsg>();
        tokio::spawn(async move {
            let mut msgs = Vec::new();
            while rx.recv_many(&mut msgs, 1000).await > 0 {
                let mut jobs = Vec::with_capacity(msgs.len());
                let mut origins = Vec::with_capacity(msgs.len());
                let mut flushed = Vec::new();
                for msg in msgs.drain(..) {
                    match msg {
                        AckMsg::Ack(job, origin) => {
                            jobs.push(job);
                            origins.push(origin);
                        }
                        AckMsg::Flush(done) => flushed.push(done),
                    }
                }
                // An ack that fails leaves the job claimed; it is redelivered
                // after its lease and replayed harmlessly.
                if !jobs.is_empty() {
                    match queue.ack(name, &jobs).await {
                        Ok(()) => pulse::done(name, &jobs),
                        Err(e) => {
                            tracing::warn!(queue = name.as_str(), jobs = jobs.len(), error = %e, "ack failed")
                        }
                    }
                }
                drop(origins);
                for done in flushed {
                    let _ = done.send(());
                }
            }
        });
        Self { tx }
    }

    /// Waits until every ack handed over so far has been written.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.tx.send(AckMsg::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }
}

#[derive(Clone)]
pub struct Settler {
    pub queue: Arc<dyn JobQueue>,
    pub name: QueueName,
    pub acker: Acker,
    pub policy: RetryPolicy,
    /// The running figures the worker's heartbeat reports.
    pub tally: Arc<Tally>,
}

impl Settler {
    async fn fail(&self, job: Claimed, origin: JobOrigin, error: String) -> Result<(), StoreError> {
        pulse::failed(self.name);
        if job.attempt >= self.policy.max_attempts {
            origin.settled("dead");
            tracing::error!(queue = self.name.as_str(), id = %job.id, attempt = job.attempt, %error, "job is dead");
            self.queue.bury(self.name, &job, &error).await
        } else {
            origin.settled("retry");
            let delay = self.policy.delay(job.attempt);
            tracing::warn!(queue = self.name.as_str(), id = %job.id, attempt = job.attempt, ?delay, %error, "job failed; will retry");
            self.queue.retry(self.name, &job, &error, delay).await
        }
    }
}

impl Acknowledge<()> for Settler {
    type Error = StoreError;
    type Future = BoxFuture<'static, Result<(), StoreError>>;

    fn ack(&mut self, res: &Result<(), BoxDynError>, ctx: &ExecutionContext) -> Self::Future {
        let Some(job) = ctx.data().get::<Claimed>() else {
            return Box::pin(async { Ok(()) });
        };
        let origin = ctx
            .data()
            .get::<JobOrigin>()
            .cloned()
            .unwrap_or_else(Origin::untraced);
        match res {
            Ok(()) => {
                self.tally.settled(true);
                origin.settled("acked");
                // The whole job: its payload goes into the done record.
                let _ = self.acker.tx.send(AckMsg::Ack(job.clone(), origin));
                Box::pin(async { Ok(()) })
            }
            Err(e) => {
                self.tally.settled(false);
                let job = job.clone();
                let this = self.clone();
                let error = e.to_string();
                Box::pin(async move { this.fail(job, origin, error).await })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 1..20 {
            let d = p.delay(attempt);
            // Jitter stretches the capped step by up to 100%.
            assert!(d <= Duration::from_secs(4), "attempt {attempt}: {d:?}");
        }
        let late: Duration = (0..20).map(|_| p.delay(8)).sum::<Duration>() / 20;
        assert!(
            late >= Duration::from_secs(1),
            "late attempts wait longer: {late:?}"
        );
    }
}
