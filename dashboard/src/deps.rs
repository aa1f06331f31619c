//! What the dashboard reaches. The binary builds it from the backends it
//! opened.
use std::sync::Arc;

use chat_links::redis_durability::Inspector;
use chat_queue::JobHistory;
use chat_search::SearchIndex;
use chat_store::intake::Intake;
use sea_orm::DatabaseConnection;

#[derive(Clone)]
pub struct DashboardDeps {
    /// Runs, figures, workers, audit, pauses, sessions, and the
    /// applications a job names.
    pub db: DatabaseConnection,
    /// The jobs operators watch and repair.
    pub queue: Arc<dyn JobHistory>,
    /// Forgets the pending entry of a write an operator discarded.
    pub intake: Arc<dyn Intake>,
    /// Only pinged, for the backends table.
    pub search: Arc<dyn SearchIndex>,
    /// What Redis keeps across a crash (distributed profile only).
    pub redis: Option<Inspector>,
}
