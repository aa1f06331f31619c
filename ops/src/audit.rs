//! The dashboard's audit trail: who did what to which job, and when.
use sea_orm::{ConnectionTrait, FromQueryResult, Statement};
use serde::Serialize;

use chat_links::error::Result;

/// One operator action, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromQueryResult)]
pub struct AuditEntry {
    /// Milliseconds since the epoch.
    pub at: i64,
    pub actor: String,
    /// What was done: `retry`, `retry_all`, `discard`.
    pub action: String,
    pub queue: String,
    /// The job acted on; `None` for an action on many.
    pub job_id: Option<String>,
    /// Anything else worth keeping, e.g. how many jobs a bulk retry moved.
    pub detail: Option<String>,
}

/// The job an entry is about: its handle when acted on, and a key that
/// names it in every state it goes through (see the dashboard's
/// `job_key`), since a handle can change with each retry.
#[derive(Clone, Copy, Debug)]
pub struct JobRef<'a> {
    pub id: &'a str,
    pub key: &'a str,
}

/// Appends an entry stamped with the current time.
pub async fn record(
    db: &impl ConnectionTrait,
    actor: &str,
    action: &str,
    queue: &str,
    job: Option<JobRef<'_>>,
    detail: Option<&str>,
) -> Result<()> {
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO admin_audit (at, actor, action, queue, job_id, job_key, detail) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            chat_links::now_millis().into(),
            actor.into(),
            action.into(),
            queue.into(),
            job.map(|j| j.id.to_owned()).into(),
            job.map(|j| j.key.to_owned()).into(),
            detail.map(str::to_owned).into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The newest `limit` entries, newest first.
pub async fn recent(db: &impl ConnectionTrait, limit: u64) -> Result<Vec<AuditEntry>> {
    Ok(
        AuditEntry::find_by_statement(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT at, actor, action, queue, job_id, detail FROM admin_audit \
         ORDER BY id DESC LIMIT ?",
            [(limit as i64).into()],
        ))
        .all(db)
        .await?,
    )
}

/// The entries about one job under any of its handles, newest first.
pub async fn for_job(
    db: &impl ConnectionTrait,
    queue: &str,
    job: JobRef<'_>,
) -> Result<Vec<AuditEntry>> {
    Ok(
        AuditEntry::find_by_statement(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT at, actor, action, queue, job_id, detail FROM admin_audit \
             WHERE queue = ? AND (job_key = ? OR job_id = ?) ORDER BY id DESC LIMIT 50",
            [queue.into(), job.key.into(), job.id.into()],
        ))
        .all(db)
        .await?,
    )
}
