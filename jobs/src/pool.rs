//! One apalis worker per queue, supervised.
//!
//! Each worker runs under a name unique to this process and this start
//! (`<queue>-<pid>-<random>`), so a restart never collides with its own
//! previous registration, and replicas never hide each other's work. A
//! worker that stops with an error is started again under a new name.
use std::{sync::Arc, time::Duration};

use crate::WorkerDeps;
use apalis::prelude::WorkerBuilderExt;
use apalis_core::{
    error::BoxDynError,
    task::data::Data,
    worker::{builder::WorkerBuilder, ext::ack::AcknowledgementExt},
};
use chat_queue::{JobQueue, QueueName};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::{
    backend::{QueueBackend, Shared},
    batcher::{BatchConfig, BatchLabel, Batcher, BulkWriter, Coalesce},
    index::IndexMessages,
    lease::{self, Held},
    outage::{Gate, Probe},
    paused::OperatorPauses,
    persist::{PersistChat, PersistMessage},
    pulse::{self, Tally},
    settle::{Acker, RetryPolicy, Settler},
    trace::JobOrigin,
};

#[derive(Clone, Copy, Debug)]
pub struct WorkerConfig {
    pub batch: BatchConfig,
    pub retry: RetryPolicy,
    /// Indexing may fail for longer than persistence (a document the index
    /// refuses); outages spend no attempts on either.
    pub index_retry: RetryPolicy,
    /// How long a claim lasts unrenewed (`CLAIM_IDLE_MS`): held jobs are
    /// renewed well within it.
    pub lease: Duration,
    /// Most rows of one index write (`INDEX_BATCH_SIZE`).
    pub index_batch_rows: usize,
    /// Longest an index batch waits to fill (`INDEX_LINGER_MS`).
    pub index_linger: Duration,
}

/// The backends the worker pools write to, each behind the gate that
/// pauses its workers while it is down.
struct Gates {
    database: Arc<Gate>,
    search: Arc<Gate>,
}

impl Gates {
    fn new(deps: &WorkerDeps) -> Self {
        let db = deps.writer.clone();
        let database: Probe = Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { db.ping().await.map_err(Into::into) })
        });
        // The server must answer; then `ensure` recreates the index if the
        // cluster lost it.
        let search_index = deps.search.clone();
        let search: Probe = Arc::new(move || {
            let search_index = search_index.clone();
            Box::pin(async move {
                search_index.ping().await?;
                search_index.ensure().await
            })
        });
        Self {
            database: Gate::new("database", database),
            search: Gate::new("search", search),
        }
    }
}

fn unique_name(queue: QueueName) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}-{}-{}",
        queue.as_str(),
        std::process::id(),
        &random[..12]
    )
}

async fn stopped(mut shutdown: watch::Receiver<bool>) -> Result<(), std::io::Error> {
    let _ = shutdown.wait_for(|stop| *stop).await;
    Ok(())
}

/// Runs every queue's worker until `shutdown` turns true.
pub async fn run_pool(deps: &WorkerDeps, config: WorkerConfig, shutdown: watch::Receiver<bool>) {
    pulse::install(deps.writer.clone());
    let gates = Gates::new(deps);
    let pauses = OperatorPauses::watch(deps.db.clone(), shutdown.clone()).await;
    let chats = run_queue::<PersistChat>(
        deps.clone(),
        config,
        gates.database.clone(),
        pauses.clone(),
        shutdown.clone(),
    );
    let messages = run_queue::<PersistMessage>(
        deps.clone(),
        config,
        gates.database.clone(),
        pauses.clone(),
        shutdown.clone(),
    );
    if deps.search.configured() {
        let index =
            run_queue::<IndexMessages>(deps.clone(), config, gates.search, pauses, shutdown);
        tokio::join!(chats, messages, index);
    } else {
        tokio::join!(chats, messages);
    }
}

fn settler(
    queue: &Arc<dyn JobQueue>,
    name: QueueName,
    policy: RetryPolicy,
    gate: Arc<Gate>,
) -> Settler {
    let held = Arc::new(Held::default());
    Settler {
        queue: queue.clone(),
        name,
        acker: Acker::spawn(queue.clone(), name, held.clone()),
        policy,
        tally: Arc::new(Tally::default()),
        gate,
        held,
    }
}

/// A queue a pool works, by the type of its jobs: where its rows go, how
/// its jobs are retried, how many are claimed at a time, and the handler
/// each job runs. Each job type implements it beside its handler
/// (`persist`, `index`).
pub(crate) trait QueueSpec: DeserializeOwned + Send + Sync + 'static {
    type Row: Coalesce;
    const QUEUE: QueueName;
    fn writer(deps: &WorkerDeps) -> Arc<dyn BulkWriter<Self::Row>>;
    /// Whether [`Self::writer`] writes to the relational database, whose
    /// single SQLite writer admits one bulk write at a time.
    const WRITES_TO_DATABASE: bool = true;
    fn policy(config: &WorkerConfig) -> RetryPolicy {
        config.retry
    }
    /// Jobs a worker holds at a time: by default enough to fill a batch
    /// of single rows. `single_writer` is the embedded profile, where every
    /// write shares one SQLite connection.
    fn in_hand(config: &WorkerConfig, _single_writer: bool) -> usize {
        config.batch.max_rows
    }
    /// How the queue's rows are batched into bulk writes.
    fn batch(config: &WorkerConfig) -> BatchConfig {
        config.batch
    }
    /// The least time between the starts of two claims that found less
    /// than a full batch: none by default.
    fn claim_pace(_: &WorkerConfig) -> Duration {
        Duration::ZERO
    }
    fn handle(
        self,
        batcher: Data<Batcher<Self::Row>>,
        origin: Data<JobOrigin>,
    ) -> impl Future<Output = Result<(), BoxDynError>> + Send;
}

/// The one handler apalis runs, for any queue: its job's own.
async fn handle<J: QueueSpec>(
    job: J,
    batcher: Data<Batcher<J::Row>>,
    origin: Data<JobOrigin>,
) -> Result<(), BoxDynError> {
    job.handle(batcher, origin).await
}

/// Runs the worker of `J`'s queue until shutdown, restarting it under a
/// fresh name when it fails.
async fn run_queue<J: QueueSpec>(
    deps: WorkerDeps,
    config: WorkerConfig,
    gate: Arc<Gate>,
    pauses: Arc<OperatorPauses>,
    shutdown: watch::Receiver<bool>,
) {
    let name = J::QUEUE;
    let mut batch = J::batch(&config);
    if deps.single_writer && J::WRITES_TO_DATABASE {
        batch.writes_in_flight = 1;
    }
    let label = BatchLabel {
        queue: name,
        system: deps.queue.system(),
    };
    let batcher = Batcher::spawn(J::writer(&deps), batch, label, gate.clone());
    let policy = J::policy(&config);
    let in_hand = J::in_hand(&config, deps.single_writer);
    let settler = settler(&deps.queue, name, policy, gate);
    let renewing =
        lease::keep_renewed(deps.queue.clone(), name, settler.held.clone(), config.lease);
    while !*shutdown.borrow() {
        let worker_name = unique_name(name);
        tracing::info!(worker = %worker_name, "worker starting");
        let backend = QueueBackend::<J>::new(
            deps.queue.clone(),
            name,
            in_hand,
            policy.max_attempts,
            Shared {
                tally: settler.tally.clone(),
                gate: settler.gate.clone(),
                held: settler.held.clone(),
                pauses: pauses.clone(),
            },
        )
        .paced(J::claim_pace(&config));
        let heartbeat = pulse::heartbeat(
            deps.writer.clone(),
            worker_name.clone(),
            name,
            settler.tally.clone(),
        );
        let worker = WorkerBuilder::new(worker_name.as_str())
            .backend(backend)
            .data(batcher.clone())
            .ack_with(settler.clone())
            .concurrency(in_hand * 2)
            .build(handle::<J>);
        let result = worker.run_until(stopped(shutdown.clone())).await;
        heartbeat.stop().await;
        supervise(result, &worker_name, &deps, name, &settler).await;
    }
    renewing.abort();
}

async fn supervise(
    result: Result<(), apalis_core::error::WorkerError>,
    worker_name: &str,
    deps: &WorkerDeps,
    queue: QueueName,
    settler: &Settler,
) {
    match result {
        Ok(()) => {
            tracing::info!(worker = worker_name, "worker stopped");
            // Acks first, so the hand-back below covers only jobs that never
            // ran rather than finished jobs whose acks were still queued.
            settler.acker.flush().await;
            match deps.queue.retire(queue, worker_name).await {
                Ok(()) => settler.held.release_consumer(worker_name),
                Err(e) => {
                    tracing::warn!(worker = worker_name, error = %e, "could not retire the consumer")
                }
            }
        }
        Err(e) => {
            tracing::error!(worker = worker_name, error = %e, "worker failed; restarting under a new name");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
