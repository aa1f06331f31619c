//! What the worker pools reach. The binary builds it from the backends it
//! opened.
use std::sync::Arc;

use chat_queue::JobQueue;
use chat_search::SearchIndex;
use chat_store::intake::Intake;
use sea_orm::DatabaseConnection;

#[derive(Clone)]
pub struct WorkerDeps {
    /// For reads: the operator pauses.
    pub db: DatabaseConnection,
    /// Where the bulk writes, figures and heartbeats go.
    pub writer: DatabaseConnection,
    pub queue: Arc<dyn JobQueue>,
    /// Drops the pending entries of the writes a batch persisted.
    pub intake: Arc<dyn Intake>,
    pub search: Arc<dyn SearchIndex>,
    /// Whether every write shares one connection (SQLite): then a pool
    /// keeps one bulk write in flight, as more would only queue for it.
    pub single_writer: bool,
}
