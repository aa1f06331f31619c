//! The search-indexing job: a message's committed state, indexed in bulk.
//!
//! The message writer enqueues one `IndexMessages` job per committed batch,
//! carrying the batch's rows, so the queue costs one entry per batch rather
//! than per message, and persistence never waits on search: while search is down
//! these jobs fail and retry with backoff, and index once it is back. The
//! document keeps the row's version, and the backends never let an older
//! version replace a newer one, so a late or redelivered job is harmless.
use std::{sync::Arc, time::Duration};

use apalis_core::{error::BoxDynError, task::data::Data};
use async_trait::async_trait;
use chat_links::StoreError;
use chat_ops::pulse::LagStage;
use chat_queue::QueueName;
use chat_search::{SearchIndex, Target};
use chat_store::model::MessageRow;
use serde::{Deserialize, Serialize};

use crate::{
    WorkerConfig, WorkerDeps,
    batcher::{BatchConfig, Batcher, BulkWriter},
    pool::QueueSpec,
    settle::RetryPolicy,
    telemetry::record_write,
    trace::JobOrigin,
};

/// Index messages' states as they were committed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IndexMessages(pub Vec<MessageRow>);

pub struct SearchWriter(pub Arc<dyn SearchIndex>);

#[async_trait]
impl BulkWriter<MessageRow> for SearchWriter {
    /// One `_bulk` request, or one tantivy commit, per batch.
    async fn write(&self, rows: &[MessageRow]) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let result = self.0.index(&Target::Live, rows).await;
        record_write(
            QueueName::Index,
            LagStage::Indexed,
            started,
            &result,
            rows.iter().map(|r| r.updated_at),
        );
        result
    }
}

impl QueueSpec for IndexMessages {
    type Row = MessageRow;
    const QUEUE: QueueName = QueueName::Index;

    fn writer(deps: &WorkerDeps) -> Arc<dyn BulkWriter<MessageRow>> {
        Arc::new(SearchWriter(deps.search.clone()))
    }

    /// tantivy or Elasticsearch, never the database: on the embedded
    /// profile too, a batch fills (its jobs claimed, decoded and acked on
    /// the SQLite writer) while the one before it is being indexed.
    const WRITES_TO_DATABASE: bool = false;

    fn policy(config: &WorkerConfig) -> RetryPolicy {
        config.index_retry
    }

    /// An index job already carries many rows, so fewer jobs than rows fill
    /// a bulk call; claiming as many jobs as rows would hold that many
    /// batches in memory. A persisted batch (the distributed profile) is
    /// up to a few hundred rows, and 64 jobs fill both bulk calls in
    /// flight. An embedded intake group is what arrived during one SQLite
    /// commit, tens of rows: 64 of them filled under half a bulk call, and
    /// the drain waited on the linger (28.5k rows/s, against 44.5k with
    /// 256 in hand).
    fn in_hand(_: &WorkerConfig, single_writer: bool) -> usize {
        if single_writer { 256 } else { 64 }
    }

    /// Bigger bulk calls than persistence's, and a longer wait to fill
    /// them: each tantivy commit writes and syncs a new segment and merges
    /// it later, at a cost that barely depends on its size (the embedded
    /// drain indexed 12.9k docs/s in commits of 500, 35k in commits of
    /// 5,000). Under a steady load a batch is what arrived during the
    /// linger: with 20 ms, `chat serve` committed tens of times a second,
    /// each commit a segment to write and later merge, and an ack on the
    /// SQLite writer the intake commits through.
    fn batch(config: &WorkerConfig) -> BatchConfig {
        BatchConfig {
            max_rows: config.index_batch_rows,
            linger: config.index_linger,
            ..config.batch
        }
    }

    /// A batch waits its linger for more rows anyway, so claiming more
    /// often than a few times per linger gains nothing. On SQLite, where
    /// each enqueue wakes the worker, claiming at every one cost a write
    /// transaction (and a sync) per intake commit on the one writer.
    fn claim_pace(config: &WorkerConfig) -> Duration {
        config.index_linger / 5
    }

    /// Hands every row to the batcher at once, so rows of several jobs
    /// share a bulk call; the job succeeds when all of its rows are
    /// indexed.
    async fn handle(
        self,
        batcher: Data<Batcher<MessageRow>>,
        origin: Data<JobOrigin>,
    ) -> Result<(), BoxDynError> {
        let rows = self.0.into_iter();
        futures::future::try_join_all(rows.map(|row| batcher.submit(row, (*origin).clone())))
            .await
            .map(|_| ())
            .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{persist::PersistMessage, settle::RetryPolicy};

    fn config() -> WorkerConfig {
        let retry = RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(10),
            max: Duration::from_millis(20),
        };
        WorkerConfig {
            batch: BatchConfig {
                max_rows: 512,
                linger: Duration::from_millis(20),
                writes_in_flight: 2,
                write_timeout: Duration::from_secs(10),
            },
            retry,
            index_retry: retry,
            lease: Duration::from_secs(15),
            index_batch_rows: 5_000,
            index_linger: Duration::from_millis(250),
        }
    }

    #[test]
    fn index_batches_fill_for_their_own_linger_and_size() {
        let config = config();
        let index = IndexMessages::batch(&config);
        assert_eq!(index.linger, Duration::from_millis(250));
        assert_eq!(index.max_rows, 5_000);
        let persist = PersistMessage::batch(&config);
        assert_eq!(persist.linger, Duration::from_millis(20));
        assert_eq!(persist.max_rows, 512);
    }
}
