//! What the scheduled tasks reach. The binary builds it from the backends
//! it opened.
use std::sync::Arc;

use chat_queue::JobHistory;
use chat_search::SearchIndex;
use chat_store::{idempotency::IdempotencyStore, intake::Intake};
use sea_orm::DatabaseConnection;

#[derive(Clone)]
pub struct SchedulerDeps {
    /// For reads: the search drift check's counts.
    pub db: DatabaseConnection,
    /// Where recounts, trims and run records are written.
    pub writer: DatabaseConnection,
    /// Trimmed of its history.
    pub queue: Arc<dyn JobHistory>,
    /// Purged of expired pending entries.
    pub intake: Arc<dyn Intake>,
    /// Purged of expired keys.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Compared with the database by the drift check.
    pub search: Arc<dyn SearchIndex>,
}
