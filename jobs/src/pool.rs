//! One apalis worker per queue, supervised.
//!
//! Each worker runs under a name unique to this process and this start
//! (`<queue>-<pid>-<random>`), so a restart never collides with its own
//! previous registration, and replicas never hide each other's work. A
//! worker that stops with an error is started again under a new name.
use std::{sync::Arc, time::Duration};

use apalis::prelude::WorkerBuilderExt;
use apalis_core::worker::{builder::WorkerBuilder, ext::ack::AcknowledgementExt};
use chat_store::{
    Backends, Profile,
    queue::{JobQueue, QueueName},
};
use tokio::sync::watch;

use crate::{
    backend::QueueBackend,
    batcher::{BatchConfig, BatchLabel, Batcher, BulkWriter},
    index::{IndexMessages, SearchWriter, index_messages},
    persist::{
        ChatWriter, MessageWriter, PersistChat, PersistMessage, persist_chat, persist_message,
    },
    pulse::{self, Tally},
    settle::{Acker, RetryPolicy, Settler},
};

#[derive(Clone, Copy, Debug)]
pub struct WorkerConfig {
    pub batch: BatchConfig,
    pub retry: RetryPolicy,
    /// Indexing retries longer than persistence: its jobs wait out a
    /// search outage rather than die in it.
    pub index_retry: RetryPolicy,
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
pub async fn run_pool(backends: &Backends, config: WorkerConfig, shutdown: watch::Receiver<bool>) {
    pulse::install(backends.writer.clone());
    let chats = run_chats(backends.clone(), config, shutdown.clone());
    let messages = run_messages(backends.clone(), config, shutdown.clone());
    let index = run_index(backends.clone(), config, shutdown);
    tokio::join!(chats, messages, index);
}

fn settler(queue: &Arc<dyn JobQueue>, name: QueueName, policy: RetryPolicy) -> Settler {
    Settler {
        queue: queue.clone(),
        name,
        acker: Acker::spawn(queue.clone(), name),
        policy,
        tally: Arc::new(Tally::default()),
    }
}

/// Jobs a worker claims at a time: enough to fill a batch of single rows.
fn rows_per_batch(config: &WorkerConfig) -> usize {
    config.batch.max_rows
}

/// An index job already carries a whole batch of rows, so a few jobs fill
/// a bulk call; claiming as many as there are rows per batch would hold
/// that many batches in memory.
fn index_jobs_in_hand(_: &WorkerConfig) -> usize {
    8
}

fn chat_writer(b: &Backends) -> Arc<dyn BulkWriter<chat_store::model::ChatRow>> {
    Arc::new(ChatWriter(b.writer.clone()))
}

fn message_writer(b: &Backends) -> Arc<dyn BulkWriter<chat_store::model::MessageRow>> {
    Arc::new(MessageWriter {
        db: b.writer.clone(),
        queue: b.queue.clone(),
    })
}

fn search_writer(b: &Backends) -> Arc<dyn BulkWriter<chat_store::model::MessageRow>> {
    Arc::new(SearchWriter(b.search.clone()))
}

/// Runs one queue's worker until shutdown, restarting it under a fresh
/// name when it fails. A macro rather than a generic function because
/// apalis's worker-builder bounds are not worth spelling out for three
/// queues.
macro_rules! run_queue {
    ($fn_name:ident, $queue:expr, $job:ty, $writer:ident, $handler:ident, $policy:ident, $in_hand:expr) => {
        async fn $fn_name(backends: Backends, config: WorkerConfig, shutdown: watch::Receiver<bool>) {
            let name = $queue;
            let writer = $writer(&backends);
            let mut batch = config.batch;
            if backends.profile == Profile::Embedded {
                batch.writes_in_flight = 1;
            }
            let label = BatchLabel {
                queue: name,
                system: backends.queue.system(),
            };
            let batcher = Batcher::spawn(writer, batch, label);
            let policy = config.$policy;
            let in_hand: usize = $in_hand(&config);
            let settler = settler(&backends.queue, name, policy);
            while !*shutdown.borrow() {
                let worker_name = unique_name(name);
                tracing::info!(worker = %worker_name, "worker starting");
                let backend = QueueBackend::<$job>::new(
                    backends.queue.clone(),
                    name,
                    in_hand,
                    policy.max_attempts,
                    settler.tally.clone(),
                );
                let heartbeat = pulse::heartbeat(
                    backends.writer.clone(),
                    worker_name.clone(),
                    name,
                    settler.tally.clone(),
                );
                let worker = WorkerBuilder::new(worker_name.as_str())
                    .backend(backend)
                    .data(batcher.clone())
                    .ack_with(settler.clone())
                    .concurrency(in_hand * 2)
                    .build($handler);
                let result = worker.run_until(stopped(shutdown.clone())).await;
                heartbeat.stop().await;
                supervise(result, &worker_name, &backends, name, &settler).await;
            }
        }
    };
}

run_queue!(
    run_chats,
    QueueName::Chats,
    PersistChat,
    chat_writer,
    persist_chat,
    retry,
    rows_per_batch
);
run_queue!(
    run_messages,
    QueueName::Messages,
    PersistMessage,
    message_writer,
    persist_message,
    retry,
    rows_per_batch
);
run_queue!(
    run_index,
    QueueName::Index,
    IndexMessages,
    search_writer,
    index_messages,
    index_retry,
    index_jobs_in_hand
);

async fn supervise(
    result: Result<(), apalis_core::error::WorkerError>,
    worker_name: &str,
    backends: &Backends,
    queue: QueueName,
    settler: &Settler,
) {
    match result {
        Ok(()) => {
            tracing::info!(worker = worker_name, "worker stopped");
            // Acks first, so the hand-back below covers only jobs that never
            // ran rather than finished jobs whose acks were still queued.
            settler.acker.flush().await;
            if let Err(e) = backends.queue.retire(queue, worker_name).await {
                tracing::warn!(worker = worker_name, error = %e, "could not retire the consumer");
            }
        }
        Err(e) => {
            tracing::error!(worker = worker_name, error = %e, "worker failed; restarting under a new name");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
