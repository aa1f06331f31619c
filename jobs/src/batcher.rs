//! Coalescing jobs into bulk writes.
//!
//! Handlers submit rows and wait; one task per queue collects up to
//! `max_rows` rows or waits `linger`, whichever comes first, collapses
//! several states of the same row into the newest (highest version), and
//! writes the batch in one transaction. Every waiting handler then learns
//! whether its row committed, so each job is acked only after the commit.
//!
//! If a batch fails, its rows are written one by one, so one bad row fails
//! only its own jobs and not the whole batch.
use std::{collections::HashMap, hash::Hash, sync::Arc, time::Duration};

use async_trait::async_trait;
use chat_store::StoreError;
use tokio::{
    sync::{mpsc, oneshot},
    time::{Instant, timeout_at},
};

/// A row state that can be coalesced with others of the same key.
pub trait Coalesce: Clone + Send + Sync + 'static {
    type Key: Hash + Eq + Send + Clone;
    fn key(&self) -> Self::Key;
    fn version(&self) -> i64;
}

#[async_trait]
pub trait BulkWriter<R>: Send + Sync + 'static {
    /// Writes every row in one transaction, or none of them.
    async fn write(&self, rows: &[R]) -> Result<(), StoreError>;
}

#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    pub max_rows: usize,
    pub linger: Duration,
}

type Reply = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct Batcher<R> {
    tx: mpsc::Sender<(R, Reply)>,
}

impl<R: Coalesce> Batcher<R> {
    pub fn spawn(writer: Arc<dyn BulkWriter<R>>, config: BatchConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.max_rows * 4);
        tokio::spawn(run(rx, writer, config));
        Self { tx }
    }

    /// Waits until `row` is committed; an error means it was not.
    pub async fn submit(&self, row: R) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((row, reply))
            .await
            .map_err(|_| "the batcher has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the batcher dropped the row".to_owned())?
    }
}

async fn run<R: Coalesce>(
    mut rx: mpsc::Receiver<(R, Reply)>,
    writer: Arc<dyn BulkWriter<R>>,
    config: BatchConfig,
) {
    let mut batch: Vec<(R, Reply)> = Vec::with_capacity(config.max_rows);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = Instant::now() + config.linger;
        while batch.len() < config.max_rows {
            match timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                _ => break,
            }
        }
        flush(&mut batch, writer.as_ref()).await;
    }
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

async fn flush<R: Coalesce>(batch: &mut Vec<(R, Reply)>, writer: &dyn BulkWriter<R>) {
    let items = std::mem::take(batch);
    let rows = coalesce(items.iter().map(|(r, _)| r.clone()));
    let started = Instant::now();
    match writer.write(&rows).await {
        Ok(()) => {
            tracing::debug!(jobs = items.len(), rows = rows.len(), elapsed = ?started.elapsed(), "batch committed");
            for (_, reply) in items {
                let _ = reply.send(Ok(()));
            }
        }
        Err(e) => {
            tracing::warn!(jobs = items.len(), error = %e, "batch failed; writing its rows one by one");
            let mut outcome: HashMap<R::Key, Result<(), String>> = HashMap::new();
            for row in rows {
                let result = writer
                    .write(std::slice::from_ref(&row))
                    .await
                    .map_err(|e| e.to_string());
                outcome.insert(row.key(), result);
            }
            for (row, reply) in items {
                let result = outcome
                    .get(&row.key())
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
}
