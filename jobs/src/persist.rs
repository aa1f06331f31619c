//! The persistence jobs and their bulk writers.
//!
//! A job carries the full new state of one row, stamped with its version;
//! the queue payload is that row's JSON.
use std::sync::Arc;

use apalis_core::{error::BoxDynError, task::data::Data};
use async_trait::async_trait;
use chat_links::StoreError;
use chat_observability::{
    propagate,
    spans::{self, Destination},
};
use chat_ops::pulse::LagStage;
use chat_queue::{JobQueue, QueueName};
use chat_store::{
    intake::Intake,
    model::{ChatRow, MessageRow},
    repo,
};
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::{
    WorkerDeps,
    batcher::{Batcher, BulkWriter, Coalesce},
    pool::QueueSpec,
    telemetry::record_write,
    trace::JobOrigin,
};

/// Persist a chat's state (create or update).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PersistChat(pub ChatRow);

/// Persist a message's state (create or update).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PersistMessage(pub MessageRow);

impl Coalesce for ChatRow {
    type Key = (i64, i64);
    fn key(&self) -> Self::Key {
        (self.application_id, self.number)
    }
    fn version(&self) -> i64 {
        self.version
    }
}

impl Coalesce for MessageRow {
    type Key = (i64, i64, i64);
    fn key(&self) -> Self::Key {
        (self.application_id, self.chat_number, self.number)
    }
    fn version(&self) -> i64 {
        self.version
    }
}

/// Writes chats, then forgets their pending entries.
pub struct ChatWriter {
    pub db: DatabaseConnection,
    pub intake: Arc<dyn Intake>,
}

/// Writes messages, hands the committed rows to search indexing, then
/// forgets their pending entries.
pub struct MessageWriter {
    pub db: DatabaseConnection,
    pub queue: Arc<dyn JobQueue>,
    pub intake: Arc<dyn Intake>,
    /// Whether committed rows go on to be indexed: not in a process with
    /// no search index, whose jobs no worker could run.
    pub indexes: bool,
}

/// The pending entries of persisted rows go, so the intake's memory follows
/// the backlog, not the write rate. Best effort: one missed is removed by
/// its expiry, and reads prefer the database's row at the same version.
fn forgotten(queue: QueueName, result: Result<(), StoreError>) {
    if let Err(e) = result {
        tracing::debug!(queue = queue.as_str(), error = %e, "could not forget pending entries");
    }
}

impl MessageWriter {
    /// Enqueues the index job in a `send index` PRODUCER span (under the
    /// batch's span), whose context the job carries.
    async fn send_index(&self, rows: &[MessageRow]) -> Result<(), StoreError> {
        let job = serde_json::to_string(rows)?;
        let span = spans::send(
            Destination {
                queue: QueueName::Index.as_str(),
                system: self.queue.system(),
            },
            None,
        );
        let trace = propagate::traceparent(&span);
        self.queue
            .enqueue_traced(QueueName::Index, job, trace)
            .instrument(span)
            .await
    }
}

#[async_trait]
impl BulkWriter<ChatRow> for ChatWriter {
    // No transaction: the upsert is one statement, and its count marks are
    // written again if the batch is redelivered, so BEGIN and COMMIT would
    // only add two round trips per batch.
    async fn write(&self, rows: &[ChatRow]) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let result = repo::chats::upsert_all(&self.db, rows).await;
        record_write(
            QueueName::Chats,
            LagStage::Persisted,
            started,
            &result,
            rows.iter().map(|r| r.updated_at),
        );
        result?;
        forgotten(QueueName::Chats, self.intake.forget_chats(rows).await);
        Ok(())
    }
}

#[async_trait]
impl BulkWriter<MessageRow> for MessageWriter {
    /// If the enqueue fails after the commit, the batch fails and its jobs
    /// retry: the upsert is then a no-op and the enqueue runs again, so an
    /// index job is never lost, only possibly doubled (which is harmless).
    async fn write(&self, rows: &[MessageRow]) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let result = repo::messages::upsert_all(&self.db, rows).await;
        record_write(
            QueueName::Messages,
            LagStage::Persisted,
            started,
            &result,
            rows.iter().map(|r| r.updated_at),
        );
        result?;
        if self.indexes {
            self.send_index(rows).await?;
        }
        forgotten(QueueName::Messages, self.intake.forget_messages(rows).await);
        Ok(())
    }
}

impl QueueSpec for PersistChat {
    type Row = ChatRow;
    const QUEUE: QueueName = QueueName::Chats;

    fn writer(deps: &WorkerDeps) -> Arc<dyn BulkWriter<ChatRow>> {
        Arc::new(ChatWriter {
            db: deps.writer.clone(),
            intake: deps.intake.clone(),
        })
    }

    async fn handle(
        self,
        batcher: Data<Batcher<ChatRow>>,
        origin: Data<JobOrigin>,
    ) -> Result<(), BoxDynError> {
        batcher
            .submit(self.0, (*origin).clone())
            .await
            .map_err(Into::into)
    }
}

impl QueueSpec for PersistMessage {
    type Row = MessageRow;
    const QUEUE: QueueName = QueueName::Messages;

    fn writer(deps: &WorkerDeps) -> Arc<dyn BulkWriter<MessageRow>> {
        Arc::new(MessageWriter {
            db: deps.writer.clone(),
            queue: deps.queue.clone(),
            intake: deps.intake.clone(),
            indexes: deps.search.configured(),
        })
    }

    async fn handle(
        self,
        batcher: Data<Batcher<MessageRow>>,
        origin: Data<JobOrigin>,
    ) -> Result<(), BoxDynError> {
        #[cfg(feature = "test-switches")]
        if crate::test_switches::failing(&self.0.body) {
            return Err("injected failure (CHAT_TEST_FAIL_SWITCH)".into());
        }
        batcher
            .submit(self.0, (*origin).clone())
            .await
            .map_err(Into::into)
    }
}
