//! What the API reaches, and what a process's probes and `/metrics` read.
//! The binary builds both from the backends it opened; the API sees
//! nothing else of them.
use std::sync::Arc;

use chat_queue::JobHistory;
use chat_search::SearchIndex;
use chat_store::{idempotency::IdempotencyStore, intake::Intake, ratelimit::RateLimiter};
use sea_orm::DatabaseConnection;

#[derive(Clone)]
pub struct ApiDeps {
    /// For reads.
    pub db: DatabaseConnection,
    /// For the writes that do not go through the intake (applications).
    pub writer: DatabaseConnection,
    pub intake: Arc<dyn Intake>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub limiter: Arc<dyn RateLimiter>,
    /// Only its `system()` (for spans) and, in `/metrics`, its depths: the
    /// API never enqueues but through the intake.
    pub queue: Arc<dyn JobHistory>,
    pub search: Arc<dyn SearchIndex>,
}

/// The backends a readiness probe pings and `/metrics` reads the queue
/// depths from, in every role.
#[derive(Clone)]
pub struct Observed {
    pub db: DatabaseConnection,
    pub queue: Arc<dyn JobHistory>,
}

impl ApiDeps {
    pub fn observed(&self) -> Observed {
        Observed {
            db: self.db.clone(),
            queue: self.queue.clone(),
        }
    }
}
