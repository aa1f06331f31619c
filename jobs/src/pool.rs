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
    batcher::{BatchConfig, Batcher},
    persist::{
        ChatWriter, MessageWriter, PersistChat, PersistMessage, persist_chat, persist_message,
    },
    settle::{Acker, RetryPolicy, Settler},
};

#[derive(Clone, Copy, Debug)]
pub struct WorkerConfig {
    pub batch: BatchConfig,
    pub retry: RetryPolicy,
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

/// Runs both queues' workers until `shutdown` turns true.
pub async fn run_pool(backends: &Backends, config: WorkerConfig, shutdown: watch::Receiver<bool>) {
    let chats = run_chats(backends.clone(), config, shutdown.clone());
    let messages = run_messages(backends.clone(), config, shutdown);
    tokio::join!(chats, messages);
}

fn settler(queue: &Arc<dyn JobQueue>, name: QueueName, config: WorkerConfig) -> Settler {
    Settler {
        queue: queue.clone(),
        name,
        acker: Acker::spawn(queue.clone(), name),
        policy: config.retry,
    }
}

/// Runs one queue's worker until shutdown, restarting it under a fresh
/// name when it fails. A macro rather than a generic function because
/// apalis's worker-builder bounds are not worth spelling out for two
/// queues.
macro_rules! run_queue {
    ($fn_name:ident, $queue:expr, $job:ty, $writer:ident, $handler:ident) => {
        async fn $fn_name(backends: Backends, config: WorkerConfig, shutdown: watch::Receiver<bool>) {
            let name = $queue;
            let writer = Arc::new($writer(backends.writer.clone()));
            let mut batch = config.batch;
            if backends.profile == Profile::Embedded {
                batch.writes_in_flight = 1;
            }
            let batcher = Batcher::spawn(writer, batch);
            let settler = settler(&backends.queue, name, config);
            while !*shutdown.borrow() {
                let worker_name = unique_name(name);
                tracing::info!(worker = %worker_name, "worker starting");
                let backend = QueueBackend::<$job>::new(
                    backends.queue.clone(),
                    name,
                    config.batch.max_rows,
                    config.retry.max_attempts,
                );
                let worker = WorkerBuilder::new(worker_name.as_str())
                    .backend(backend)
                    .data(batcher.clone())
                    .ack_with(settler.clone())
                    .concurrency(config.batch.max_rows * 2)
                    .build($handler);
                let result = worker.run_until(stopped(shutdown.clone())).await;
                supervise(result, &worker_name, &backends, name, &settler).await;
            }
        }
    };
}

run_queue!(
    run_chats,
    QueueName::Chats,
    PersistChat,
    ChatWriter,
    persist_chat
);
run_queue!(
    run_messages,
    QueueName::Messages,
    PersistMessage,
    MessageWriter,
    persist_message
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
