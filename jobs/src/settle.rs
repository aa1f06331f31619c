//! Settling a job once its handler has returned.
//!
//! - success: the job's id goes to an [`Acker`], which acks in batches;
//!   the handler only returns after its batch committed, so an ack always
//!   follows the commit. A crash between the two redelivers the job, and
//!   the version-guarded upsert makes the replay a no-op.
//! - its backend was down ([`WriteError::Outage`]): the job is handed back
//!   as it was, due again after the gate's pause. No attempt is spent and
//!   no failure recorded: an outage says nothing about the job.
//! - failure with attempts left: the job is retried after an exponential
//!   backoff with jitter (`RETRY_BASE_MS` doubling up to `RETRY_MAX_MS`,
//!   each step stretched by a random 0–100% of itself).
//! - failure on the last attempt: the job is buried with its history.
//!
//! Settling talks to the queue, which may itself be down: every settle is
//! tried again until it lands. Until then the job stays held, and its
//! lease renewed (see `lease`), so no other worker runs it meanwhile.
use std::{sync::Arc, time::Duration};

use apalis_core::{error::BoxDynError, task::ExecutionContext, worker::ext::ack::Acknowledge};
use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use chat_links::StoreError;
use chat_links::grouping::{Group, GroupWork, Grouping};
use chat_queue::{Claimed, JobQueue, QueueName};
use futures::future::BoxFuture;

use crate::{
    batcher::WriteError,
    lease::Held,
    outage::Gate,
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
    group: Group<AckMsg, ()>,
}

enum AckMsg {
    /// The origin rides along so the job's span ends once its ack is
    /// written, not before.
    Ack(Claimed, JobOrigin),
    /// Answered once every ack sent before it has been written: one group
    /// at a time is at work, in order.
    Flush,
}

/// Acks handed over in one call, most per group.
const ACKS_PER_CALL: usize = 1000;

/// Tries of a settle that fails for another reason than an outage.
const SETTLE_TRIES: u32 = 5;

/// Runs a settle until it lands, pausing longer after each failure: the
/// queue may be restarting, and the job stays held meanwhile. A failure
/// that is not an outage is tried a few times only; the job is then let
/// go, and once its lease lapses another worker takes it over.
async fn until_settled<F, Fut>(what: &str, name: QueueName, mut settle: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut pause = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        match settle().await {
            Ok(()) => return,
            Err(e) => {
                tries += 1;
                if !e.is_unavailable() && tries >= SETTLE_TRIES {
                    tracing::error!(queue = name.as_str(), error = %e, "{what} failed {tries} times; letting the job go to be taken over");
                    return;
                }
                tracing::warn!(queue = name.as_str(), error = %e, ?pause, "{what} failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

impl Acker {
    pub fn spawn(queue: Arc<dyn JobQueue>, name: QueueName, held: Arc<Held>) -> Self {
        let grouping = Grouping {
            max: ACKS_PER_CALL,
            linger: Duration::ZERO,
            in_flight: 1,
        };
        let work = AckWork { queue, name, held };
        Self {
            group: Group::spawn(Arc::new(work), grouping),
        }
    }

    /// Hands a done job over, to be acked with others.
    async fn ack(&self, job: Claimed, origin: JobOrigin) {
        // A stopped acker is this process stopping: the job's lease lapses
        // and another worker takes it over.
        let _ = self.group.tell(AckMsg::Ack(job, origin)).await;
    }

    /// Waits until every ack handed over so far has been written.
    pub async fn flush(&self) {
        let _ = self.group.ask(AckMsg::Flush).await;
    }
}

struct AckWork {
    queue: Arc<dyn JobQueue>,
    name: QueueName,
    held: Arc<Held>,
}

#[async_trait]
impl GroupWork<AckMsg> for AckWork {
    type Answer = ();

    async fn answer(&self, group: Vec<AckMsg>) -> Vec<()> {
        let answers = vec![(); group.len()];
        let mut jobs = Vec::with_capacity(group.len());
        let mut origins = Vec::with_capacity(group.len());
        for msg in group {
            if let AckMsg::Ack(job, origin) = msg {
                jobs.push(job);
                origins.push(origin);
            }
        }
        if !jobs.is_empty() {
            let (queue, name) = (&self.queue, self.name);
            until_settled("ack", name, || queue.ack(name, &jobs)).await;
            pulse::done(name, &jobs);
            for job in &jobs {
                self.held.release(&job.id);
            }
        }
        drop(origins);
        answers
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
    /// The backend this queue's jobs write to.
    pub gate: Arc<Gate>,
    /// The jobs held, whose leases are renewed until they settle.
    pub held: Arc<Held>,
}

impl Settler {
    async fn fail(&self, job: Claimed, origin: JobOrigin, error: String) {
        pulse::failed(self.name);
        let (queue, name) = (&self.queue, self.name);
        if job.attempt >= self.policy.max_attempts {
            origin.settled("dead");
            tracing::error!(queue = name.as_str(), id = %job.id, attempt = job.attempt, %error, "job is dead");
            until_settled("bury", name, || queue.bury(name, &job, &error)).await;
        } else {
            origin.settled("retry");
            let delay = self.policy.delay(job.attempt);
            tracing::warn!(queue = name.as_str(), id = %job.id, attempt = job.attempt, ?delay, %error, "job failed; will retry");
            until_settled("retry", name, || queue.retry(name, &job, &error, delay)).await;
        }
        self.held.release(&job.id);
    }

    /// Hands a job that met an outage back as it was, due once the gate
    /// is likely open again (with jitter, so jobs do not come back as one
    /// burst).
    async fn defer(&self, job: Claimed, origin: JobOrigin, reason: &str) {
        origin.settled("deferred");
        let pause = self.gate.pause();
        let delay = pause + pause.mul_f64(rand::random::<f64>());
        tracing::debug!(queue = self.name.as_str(), id = %job.id, ?delay, %reason, "job handed back: its backend is unavailable");
        let (queue, name) = (&self.queue, self.name);
        let jobs = std::slice::from_ref(&job);
        until_settled("hand-back", name, || queue.defer(name, jobs, delay)).await;
        self.held.release(&job.id);
    }
}

/// The outage a handler's error reports, if it is one.
fn outage(e: &BoxDynError) -> Option<&str> {
    match e.downcast_ref::<WriteError>() {
        Some(WriteError::Outage(reason)) => Some(reason),
        _ => None,
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
                let (acker, job) = (self.acker.clone(), job.clone());
                Box::pin(async move {
                    acker.ack(job, origin).await;
                    Ok(())
                })
            }
            Err(e) => {
                let job = job.clone();
                let this = self.clone();
                if let Some(reason) = outage(e) {
                    self.tally.handed_back();
                    let reason = reason.to_owned();
                    return Box::pin(async move {
                        this.defer(job, origin, &reason).await;
                        Ok(())
                    });
                }
                self.tally.settled(false);
                let error = e.to_string();
                Box::pin(async move {
                    this.fail(job, origin, error).await;
                    Ok(())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_told_apart_from_a_failure() {
        let outage_error: BoxDynError = Box::new(WriteError::Outage("refused".into()));
        assert_eq!(outage(&outage_error), Some("refused"));
        let failed: BoxDynError = Box::new(WriteError::Failed("bad row".into()));
        assert_eq!(outage(&failed), None);
        let other: BoxDynError = "anything else".into();
        assert_eq!(outage(&other), None);
    }

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
