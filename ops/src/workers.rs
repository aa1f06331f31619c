//! The registry of running workers: each refreshes its row with a
//! heartbeat, so the dashboard can show who is working, on what, and who
//! went silent. A clean stop removes the row; housekeeping removes the rows
//! of workers that died without one.
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement};
use serde::Serialize;

use chat_links::error::Result;

/// One worker as its last heartbeat described it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromQueryResult)]
pub struct WorkerBeat {
    /// Unique per process and start.
    pub name: String,
    pub queue: String,
    pub host: String,
    pub pid: i64,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    pub beat_at: i64,
    /// Jobs claimed and not yet settled.
    pub in_flight: i64,
    /// Jobs settled since the worker started, failures included.
    pub processed: i64,
    pub failed: i64,
    /// Why the worker is not claiming work, while it waits out an outage of
    /// a backend it writes to ("database unavailable since …: …").
    pub paused: Option<String>,
}

/// Inserts or refreshes the worker's row.
pub async fn beat(db: &impl ConnectionTrait, w: &WorkerBeat) -> Result<()> {
    let backend = db.get_database_backend();
    let upsert = match backend {
        DbBackend::Sqlite => {
            "ON CONFLICT (name) DO UPDATE SET beat_at = excluded.beat_at, \
             in_flight = excluded.in_flight, processed = excluded.processed, \
             failed = excluded.failed, paused = excluded.paused"
        }
        _ => {
            "ON DUPLICATE KEY UPDATE beat_at = VALUES(beat_at), in_flight = VALUES(in_flight), \
             processed = VALUES(processed), failed = VALUES(failed), paused = VALUES(paused)"
        }
    };
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "INSERT INTO job_workers \
               (name, queue, host, pid, started_at, beat_at, in_flight, processed, failed, paused) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {upsert}"
        ),
        [
            w.name.clone().into(),
            w.queue.clone().into(),
            w.host.clone().into(),
            w.pid.into(),
            w.started_at.into(),
            w.beat_at.into(),
            w.in_flight.into(),
            w.processed.into(),
            w.failed.into(),
            w.paused.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Removes a worker that stopped cleanly.
pub async fn gone(db: &impl ConnectionTrait, name: &str) -> Result<()> {
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "DELETE FROM job_workers WHERE name = ?",
        [name.into()],
    ))
    .await?;
    Ok(())
}

/// Every registered worker, by queue and name.
pub async fn list(db: &impl ConnectionTrait) -> Result<Vec<WorkerBeat>> {
    Ok(WorkerBeat::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        "SELECT name, queue, host, pid, started_at, beat_at, in_flight, processed, failed, paused \
         FROM job_workers ORDER BY queue, name",
    ))
    .all(db)
    .await?)
}

/// Removes the workers whose last heartbeat is older than `before` (ms):
/// they died without stopping cleanly.
pub async fn forget_silent(db: &impl ConnectionTrait, before: i64) -> Result<u64> {
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "DELETE FROM job_workers WHERE beat_at < ?",
            [before.into()],
        ))
        .await?;
    Ok(done.rows_affected())
}
