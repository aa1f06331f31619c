//! Coalescing jobs into bulk writes.
//!
//! Handlers submit rows and wait; one task per queue collects up to
//! `max_rows` rows or waits `linger`, whichever comes first, collapses
//! several states of the same row into the newest (highest version), and
//! writes the batch in one statement. Every waiting handler then learns
//! whether its row committed, so each job is acked only after the commit.
//!
//! If a batch fails, its rows are written one by one, so one bad row fails
//! only its own jobs and not the whole batch.
//!
//! Each row arrives with its job's [`JobOrigin`], and each batch is written
//! inside a `process <queue>` span linked to those jobs (see `trace`).
use std::{collections::HashMap, hash::Hash, sync::Arc, time::Duration};

use async_trait::async_trait;
use chat_store::{StoreError, queue::QueueName};
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    time::{Instant, timeout_at},
};
use tracing::Instrument;

use crate::trace::{self, JobOrigin};

/// A row state that can be coalesced with others of the same key.
pub trait Coalesce: Clone + Send + Sync + 'static {
    type Key: Hash + Eq + Send + Clone;
    fn key(&self) -> Self::Key;
    fn version(&self) -> i64;
}

#[async_trait]
pub trait BulkWriter<R>: Send + Sync + 'static {
    /// Writes every row atomically (one statement or one transaction), or
    /// none of them.
    async fn write(&self, rows: &[R]) -> Result<(), StoreError>;
}

#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    pub max_rows: usize,
    pub linger: Duration,
    /// Batches written at once. More than one lets a batch fill (and its
    /// jobs be claimed, decoded and acked) while another is in the
    /// database; the version guard makes their commit order irrelevant.
    /// SQLite has one writer, so there it stays 1.
    pub writes_in_flight: usize,
}

type Reply = oneshot::Sender<Result<(), String>>;

/// One row waiting for its batch: the row, whom to tell, and its job.
type Item<R> = (R, Reply, JobOrigin);

/// The queue a batcher writes for, and what that queue runs on, as its
/// batch spans name them.
#[derive(Clone, Copy, Debug)]
pub struct BatchLabel {
    pub queue: QueueName,
    pub system: &'static str,
}

#[derive(Clone)]
pub struct Batcher<R> {
    tx: mpsc::Sender<Item<R>>,
}

impl<R: Coalesce> Batcher<R> {
    pub fn spawn(writer: Arc<dyn BulkWriter<R>>, config: BatchConfig, label: BatchLabel) -> Self {
        let (tx, rx) = mpsc::channel(config.max_rows * 4);
        tokio::spawn(run(rx, writer, config, label));
        Self { tx }
    }

    /// Waits until `row` is committed; an error means it was not.
    pub async fn submit(&self, row: R, origin: JobOrigin) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((row, reply, origin))
            .await
            .map_err(|_| "the batcher has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the batcher dropped the row".to_owned())?
    }
}

async fn run<R: Coalesce>(
    mut rx: mpsc::Receiver<Item<R>>,
    writer: Arc<dyn BulkWriter<R>>,
    config: BatchConfig,
    label: BatchLabel,
) {
    let in_flight = config.writes_in_flight.max(1);
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            break;
        };
        let mut batch: Vec<Item<R>> = Vec::with_capacity(config.max_rows);
        batch.push(first);
        let deadline = Instant::now() + config.linger;
        while batch.len() < config.max_rows {
            match timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                _ => break,
            }
        }
        let writer = writer.clone();
        tokio::spawn(async move {
            let origins: Vec<&JobOrigin> = batch.iter().map(|(_, _, o)| o).collect();
            let span = trace::batch(label.queue, label.system, &origins);
            flush(batch, writer.as_ref()).instrument(span).await;
            drop(slot);
        });
    }
    // Every sender is gone: let the writes in flight finish.
    let _ = slots.acquire_many(in_flight as u32).await;
}

/// Keeps the newest state per key, in first-seen order.
pub fn coalesce<R: Coalesce>(rows: impl IntoIterator<Item = R>) -> Vec<R> {
    let mut index: HashMap<R::Key, usize> = HashMap::new();
    let mut out: Vec<R> = Vec::new();
    for row in rows {
        match index.get(&row.key()) {
            Some(&i) if out[i].version() >= row.version() => {}
            Some(&i) => out[i] = row,
            None => {
                index.insert(row.key(), out.len());
                out.push(row);
            }
        }
    }
    out
}

async fn flush<R: Coalesce>(batch: Vec<Item<R>>, writer: &dyn BulkWriter<R>) {
    let (keyed_replies, rows): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|(row, reply, _)| ((row.key(), reply), row))
        .unzip();
    let rows = coalesce(rows);
    let started = Instant::now();
    match writer.write(&rows).await {
        Ok(()) => {
            tracing::debug!(jobs = keyed_replies.len(), rows = rows.len(), elapsed = ?started.elapsed(), "batch committed");
            for (_, reply) in keyed_replies {
                let _ = reply.send(Ok(()));
            }
        }
        Err(e) => {
            tracing::Span::current().record("otel.status_code", "error");
            tracing::warn!(jobs = keyed_replies.len(), error = %e, "batch failed; writing its rows one by one");
            let mut outcome: HashMap<R::Key, Result<(), String>> = HashMap::new();
            for row in rows {
                let result = writer
                    .write(std::slice::from_ref(&row))
                    .await
                    .map_err(|e| e.to_string());
                outcome.insert(row.key(), result);
            }
            for (key, reply) in keyed_replies {
                let result = outcome
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| Err("row missing from its batch".into()));
                let _ = reply.send(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Row(u32, i64);

    impl Coalesce for Row {
        type Key = u32;
        fn key(&self) -> u32 {
            self.0
        }
        fn version(&self) -> i64 {
            self.1
        }
    }

    #[test]
    fn coalescing_keeps_the_newest_state_of_each_row() {
        let rows = coalesce(vec![Row(1, 5), Row(2, 1), Row(1, 9), Row(1, 7)]);
        assert_eq!(rows, vec![Row(1, 9), Row(2, 1)]);
    }

    /// Counts how many writes overlap, and every row written.
    #[derive(Default)]
    struct SlowWriter {
        now: std::sync::atomic::AtomicUsize,
        peak: std::sync::atomic::AtomicUsize,
        written: std::sync::Mutex<Vec<u32>>,
    }

    #[async_trait]
    impl BulkWriter<Row> for SlowWriter {
        async fn write(&self, rows: &[Row]) -> Result<(), StoreError> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.now.fetch_add(1, SeqCst) + 1;
            self.peak.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.written
                .lock()
                .unwrap()
                .extend(rows.iter().map(|r| r.0));
            self.now.fetch_sub(1, SeqCst);
            Ok(())
        }
    }

    async fn peak_writes(writes_in_flight: usize) -> usize {
        let writer = Arc::new(SlowWriter::default());
        let batcher = Batcher::spawn(
            writer.clone(),
            BatchConfig {
                max_rows: 10,
                linger: Duration::from_millis(1),
                writes_in_flight,
            },
            BatchLabel {
                queue: QueueName::Messages,
                system: "test",
            },
        );
        let submissions = (0..100).map(|i| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit(Row(i, 1), trace::Origin::untraced()).await })
        });
        for s in futures::future::join_all(submissions).await {
            assert_eq!(s.unwrap(), Ok(()));
        }
        let mut written = writer.written.lock().unwrap().clone();
        written.sort_unstable();
        assert_eq!(written, (0..100).collect::<Vec<_>>(), "every row once");
        writer.peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn batches_overlap_up_to_the_configured_writes_in_flight() {
        assert_eq!(peak_writes(1).await, 1);
        assert_eq!(peak_writes(3).await, 3);
    }
}
