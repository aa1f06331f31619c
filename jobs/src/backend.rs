//! `QueueBackend<T>`: apalis's `Backend` implemented over a [`JobQueue`].
//!
//! We implement the trait ourselves instead of using apalis-redis or
//! apalis-sqlite 1.0.0; ARCHITECTURE.md gives the reasons. The backend
//! claims up to `batch` jobs at a time under the worker's unique name and
//! hands them to apalis one by one, each carrying its [`Claimed`] handle in
//! the task's data so the settle step can ack, retry or bury it, and its
//! [`JobOrigin`] (its trace context and `receive` span).
use std::{
    collections::VecDeque,
    marker::PhantomData,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::{
    backend::{Backend, BackendConfig, finalize::Ephemeral},
    task::{Task, builder::TaskBuilder, task_id::RandomId},
    worker::context::WorkerContext,
};
use chat_links::StoreError;
use chat_observability::health;
use chat_queue::{Claimed, JobQueue, QueueName};
use futures::{StreamExt, stream::BoxStream};
use serde::de::DeserializeOwned;
use tower::layer::util::Identity;

use crate::{
    lease::Held,
    outage::Gate,
    paused::OperatorPauses,
    pulse::Tally,
    trace::{self, JobOrigin},
};

/// How long one claim waits for work before asking again.
const CLAIM_WAIT: Duration = Duration::from_millis(500);
/// The queue's name where outages are reported (`/health/ready`, `/metrics`).
const QUEUE_BACKEND: &str = "queue";

pub struct QueueBackend<T> {
    queue: Arc<dyn JobQueue>,
    name: QueueName,
    batch: usize,
    max_attempts: u32,
    tally: Arc<Tally>,
    gate: Arc<Gate>,
    held: Arc<Held>,
    pauses: Arc<OperatorPauses>,
    pace: Duration,
    stream: Option<BoxStream<'static, Result<Task<T>, StoreError>>>,
    _job: PhantomData<fn() -> T>,
}

/// What a worker's backend shares with the rest of its queue's pool.
pub struct Shared {
    pub tally: Arc<Tally>,
    /// The backend its jobs write to: no claim while it is down.
    pub gate: Arc<Gate>,
    /// Jobs claimed and unsettled, whose leases are renewed.
    pub held: Arc<Held>,
    /// No claim while an operator has the queue paused.
    pub pauses: Arc<OperatorPauses>,
}

impl<T> QueueBackend<T> {
    /// `max_attempts` also bounds deliveries that never settled: a job whose
    /// worker died holding it more often than that is buried unrun.
    pub fn new(
        queue: Arc<dyn JobQueue>,
        name: QueueName,
        batch: usize,
        max_attempts: u32,
        shared: Shared,
    ) -> Self {
        Self {
            queue,
            name,
            batch,
            max_attempts,
            tally: shared.tally,
            gate: shared.gate,
            held: shared.held,
            pauses: shared.pauses,
            pace: Duration::ZERO,
            stream: None,
            _job: PhantomData,
        }
    }

    /// Claims that find less than a full batch start at least `pace` apart.
    /// Without it, a SQLite queue's worker wakes at every enqueue and claims
    /// the one new job, a write of its own on the single writer, which the
    /// enqueuer's next commit then waits behind.
    pub fn paced(mut self, pace: Duration) -> Self {
        self.pace = pace;
        self
    }
}

struct Feed {
    queue: Arc<dyn JobQueue>,
    name: QueueName,
    consumer: String,
    batch: usize,
    max_attempts: u32,
    tally: Arc<Tally>,
    gate: Arc<Gate>,
    held: Arc<Held>,
    pauses: Arc<OperatorPauses>,
    buffer: VecDeque<Claimed>,
    failures: u32,
    pace: Duration,
    /// When the last claim that found less than a full batch started.
    last_short_claim: Option<tokio::time::Instant>,
}

impl Feed {
    /// The next claimed job. Queue outages are waited out with backoff
    /// rather than returned: an error here would stop the apalis worker,
    /// and a restarted Redis or a locked SQLite file is no reason to stop.
    /// While the backend the jobs write to is down, nothing is claimed, and
    /// jobs claimed before it went down are handed back unrun.
    async fn next(&mut self) -> Claimed {
        loop {
            if self.gate.is_closed() && !self.buffer.is_empty() {
                self.hand_back_buffer().await;
            }
            if let Some(job) = self.buffer.pop_front() {
                return job;
            }
            if let Some(last) = self.last_short_claim.take() {
                tokio::time::sleep_until(last + self.pace).await;
            }
            if !self.pauses.known() {
                self.pauses.tick().await;
                continue;
            }
            if let Some(why) = self.pauses.why(self.name) {
                self.tally.pause(Some(why));
                self.pauses.tick().await;
                continue;
            }
            if let Some((since_ms, error)) = self.gate.reason() {
                let since = chrono::DateTime::from_timestamp_millis(since_ms)
                    .map(|t| t.format("%H:%M:%S UTC").to_string())
                    .unwrap_or_default();
                self.tally.pause(Some(format!(
                    "{} unavailable since {since}: {error}",
                    self.gate.name()
                )));
            }
            self.gate.wait_open().await;
            self.tally.pause(None);
            let started = tokio::time::Instant::now();
            // The claim runs as its own task. apalis stops polling this
            // stream when the worker shuts down but drops it only after the
            // in-flight jobs finish; a claim suspended mid-query would keep
            // its database connection (SQLite's only writer) and those jobs
            // could never commit. A spawned claim completes regardless.
            let claim = {
                let (queue, name, consumer, batch) = (
                    self.queue.clone(),
                    self.name,
                    self.consumer.clone(),
                    self.batch,
                );
                tokio::spawn(async move { queue.claim(name, &consumer, batch, CLAIM_WAIT).await })
            };
            let claimed = claim
                .await
                .unwrap_or_else(|e| Err(StoreError::Other(format!("claim task failed: {e}"))));
            match claimed {
                Ok(jobs) => {
                    if self.failures > 0 {
                        health::up(QUEUE_BACKEND);
                    }
                    self.failures = 0;
                    if jobs.len() < self.batch && !self.pace.is_zero() {
                        self.last_short_claim = Some(started);
                    }
                    self.held.hold(&jobs);
                    self.buffer.extend(jobs);
                }
                Err(e) => {
                    if self.failures == 0 {
                        health::down(QUEUE_BACKEND, chat_links::now_millis(), &e.to_string());
                    }
                    self.failures += 1;
                    let pause = Duration::from_millis(100 * 2u64.pow(self.failures.min(6)));
                    tracing::warn!(queue = self.name.as_str(), error = %e, ?pause, "claim failed");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

impl Feed {
    /// Claimed jobs no handler has started go back, unrun and at no cost in
    /// attempts, due when the backend is likely back.
    async fn hand_back_buffer(&mut self) {
        let jobs: Vec<Claimed> = self.buffer.drain(..).collect();
        let delay = self.gate.pause();
        let mut pause = Duration::from_millis(100);
        while let Err(e) = self.queue.defer(self.name, &jobs, delay).await {
            tracing::warn!(queue = self.name.as_str(), error = %e, "could not hand jobs back; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        tracing::info!(
            queue = self.name.as_str(),
            jobs = jobs.len(),
            "handed back unstarted jobs: their backend is unavailable"
        );
        for job in &jobs {
            self.held.release(&job.id);
        }
    }

    /// Buries a job the feed will not hand to a handler.
    async fn bury(&self, job: &Claimed, reason: &str) {
        if let Err(e) = self.queue.bury(self.name, job, reason).await {
            tracing::warn!(error = %e, "could not bury a job; it will be delivered again");
        }
        self.held.release(&job.id);
    }
}

fn feed<T: DeserializeOwned + Send + 'static>(
    feed: Feed,
) -> BoxStream<'static, Result<Task<T>, StoreError>> {
    futures::stream::unfold(feed, |mut state| async move {
        loop {
            let job = state.next().await;
            if job.attempt > state.max_attempts {
                // Only deliveries that never settled push a job past its
                // attempts here (failures are counted by the settle step):
                // it keeps killing its worker, so do not run it again.
                let reason = format!(
                    "delivered {} times without settling: its worker stopped while running it",
                    job.attempt - 1
                );
                tracing::error!(queue = state.name.as_str(), id = %job.id, %reason);
                state.bury(&job, &reason).await;
                continue;
            }
            match serde_json::from_str::<T>(&job.payload) {
                Ok(args) => {
                    let origin: JobOrigin = trace::claimed(state.name, state.queue.system(), &job);
                    state.tally.started();
                    let task = TaskBuilder::new(args)
                        .attempt(job.attempt as usize)
                        .data(job)
                        .data(origin)
                        .build();
                    return Some((Ok(task), state));
                }
                Err(e) => {
                    // A payload that cannot be read will never succeed:
                    // bury it at once, with the reason. Only where it
                    // broke: serde's message can quote a value, such as a
                    // message body, which must stay out of logs.
                    let reason = format!(
                        "undecodable payload: {:?} error at line {} column {}",
                        e.classify(),
                        e.line(),
                        e.column()
                    );
                    tracing::error!(queue = state.name.as_str(), id = %job.id, %reason);
                    state.bury(&job, &reason).await;
                }
            }
        }
    })
    .boxed()
}

impl<T: DeserializeOwned + Send + 'static> Backend for QueueBackend<T> {
    type Task = Task<T>;
    type Error = StoreError;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        let stream = self.stream.get_or_insert_with(|| {
            feed(Feed {
                queue: self.queue.clone(),
                name: self.name,
                consumer: worker.name().to_string(),
                batch: self.batch,
                max_attempts: self.max_attempts,
                tally: self.tally.clone(),
                gate: self.gate.clone(),
                held: self.held.clone(),
                pauses: self.pauses.clone(),
                buffer: VecDeque::new(),
                failures: 0,
                pace: self.pace,
                last_short_claim: None,
            })
        });
        stream.poll_next_unpin(cx)
    }

    fn poll_close(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        // Claimed-but-unstarted jobs stay owned by this consumer until their
        // lease runs out, then another consumer takes them over.
        self.stream = None;
        Poll::Ready(Ok(()))
    }
}

impl<T: DeserializeOwned + Send + 'static> BackendConfig for QueueBackend<T> {
    type Args = T;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        Identity::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use chat_queue::SqliteQueue;

    use super::*;

    /// A feed over a fresh SQLite queue that claims up to `batch` jobs.
    async fn feed_over_sqlite(batch: usize, pace: Duration) -> (Arc<dyn JobQueue>, Feed) {
        let path =
            std::env::temp_dir().join(format!("chat-pace-{}.db", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let db = chat_links::db::connect(&url).await.unwrap();
        chat_links::db::migrate(&db).await.unwrap();
        let writer = chat_links::db::connect_writer(&url).await.unwrap();
        let queue: Arc<dyn JobQueue> = SqliteQueue::new(db, writer, Duration::from_secs(30));
        let feed = Feed {
            queue: queue.clone(),
            name: QueueName::Index,
            consumer: "paced".into(),
            batch,
            max_attempts: 3,
            tally: Arc::default(),
            gate: Gate::new("search", Arc::new(|| Box::pin(async { Ok(()) }))),
            held: Arc::default(),
            pauses: OperatorPauses::none(),
            buffer: VecDeque::new(),
            failures: 0,
            pace,
            last_short_claim: None,
        };
        (queue, feed)
    }

    #[tokio::test]
    async fn a_claim_that_found_little_waits_its_pace_before_the_next() {
        let pace = Duration::from_secs(2);
        let (queue, mut feed) = feed_over_sqlite(8, pace).await;
        let started = Instant::now();
        queue.enqueue(QueueName::Index, "1".into()).await.unwrap();
        assert_eq!(feed.next().await.payload, "1");
        queue.enqueue(QueueName::Index, "2".into()).await.unwrap();
        assert_eq!(feed.next().await.payload, "2");
        assert!(
            started.elapsed() >= pace,
            "the second claim came {:?} after the first started",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_full_claim_is_followed_at_once() {
        let pace = Duration::from_secs(2);
        let (queue, mut feed) = feed_over_sqlite(1, pace).await;
        queue.enqueue(QueueName::Index, "1".into()).await.unwrap();
        queue.enqueue(QueueName::Index, "2".into()).await.unwrap();
        let started = Instant::now();
        assert_eq!(feed.next().await.payload, "1");
        assert_eq!(feed.next().await.payload, "2");
        assert!(
            started.elapsed() < pace,
            "a full claim held the next back for {:?}",
            started.elapsed()
        );
    }
}
