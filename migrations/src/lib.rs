//! The database schema, as ordered sea-orm migrations.
//!
//! Owns table and index definitions for MySQL and SQLite. It must not know
//! about HTTP, queues or jobs: the tables it creates are described here, and
//! everything that reads or writes them lives in `chat-store`.
pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;

mod m0001_core_tables;
mod m0002_embedded_tables;
mod m0003_search_rebuilds;
mod m0004_scheduler;
mod m0005_job_traces;
mod m0006_admin_audit;
mod m0007_job_pulse;
mod m0008_worker_pause;
mod m0009_idempotency_keys;
mod m0010_operator_controls;
mod m0011_queue_payloads;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_core_tables::Migration),
            Box::new(m0002_embedded_tables::Migration),
            Box::new(m0003_search_rebuilds::Migration),
            Box::new(m0004_scheduler::Migration),
            Box::new(m0005_job_traces::Migration),
            Box::new(m0006_admin_audit::Migration),
            Box::new(m0007_job_pulse::Migration),
            Box::new(m0008_worker_pause::Migration),
            Box::new(m0009_idempotency_keys::Migration),
            Box::new(m0010_operator_controls::Migration),
            Box::new(m0011_queue_payloads::Migration),
        ]
    }
}
