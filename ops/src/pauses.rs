//! Queues an operator paused: workers stop claiming from them while the
//! API keeps accepting. Kept in the database, so a pause outlives every
//! process and all workers see the same one.
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement};
use serde::Serialize;

use chat_links::error::Result;

/// A paused queue: who paused it and when (ms since the epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromQueryResult)]
pub struct Pause {
    pub queue: String,
    pub paused_by: String,
    pub paused_at: i64,
}

/// Pauses `queue`; `false` when it already was (the first pause stands).
pub async fn pause(db: &impl ConnectionTrait, queue: &str, by: &str) -> Result<bool> {
    let backend = db.get_database_backend();
    let verb = match backend {
        DbBackend::MySql => "INSERT IGNORE",
        _ => "INSERT OR IGNORE",
    };
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            format!("{verb} INTO queue_pauses (queue, paused_by, paused_at) VALUES (?, ?, ?)"),
            [queue.into(), by.into(), chat_links::now_millis().into()],
        ))
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Resumes `queue`; `false` when it was not paused.
pub async fn resume(db: &impl ConnectionTrait, queue: &str) -> Result<bool> {
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "DELETE FROM queue_pauses WHERE queue = ?",
            [queue.into()],
        ))
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Every paused queue.
pub async fn all(db: &impl ConnectionTrait) -> Result<Vec<Pause>> {
    Ok(Pause::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        "SELECT queue, paused_by, paused_at FROM queue_pauses ORDER BY queue",
    ))
    .all(db)
    .await?)
}
