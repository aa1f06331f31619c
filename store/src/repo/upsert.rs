//! Version-guarded multi-row upserts.
//!
//! A row is inserted if absent; otherwise its mutable columns change only
//! when the incoming `version` is greater than the stored one. That makes
//! a redelivered or late job a no-op instead of an overwrite, and makes the
//! statement idempotent under at-least-once delivery.
use chat_observability::spans;
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use tracing::Instrument;

use super::sizes;
use crate::model::{ChatRow, MessageRow};
use chat_links::error::Result;

/// Runs one bulk INSERT in a CLIENT span named and attributed per the
/// OpenTelemetry database conventions.
async fn execute(
    db: &impl ConnectionTrait,
    name: &'static str,
    table: &'static str,
    rows: usize,
    statement: Statement,
) -> Result<()> {
    let system = match db.get_database_backend() {
        DbBackend::MySql => "mysql",
        DbBackend::Sqlite => "sqlite",
        _ => "postgresql",
    };
    let span = spans::db_insert(name, system, table, rows);
    let result = db.execute_raw(statement).instrument(span.clone()).await;
    if result.is_err() {
        spans::failed(&span);
    }
    result?;
    Ok(())
}

fn placeholders(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(", "));
    vec![one; rows].join(", ")
}

/// `SET` clauses for the mutable columns, guarded by version.
fn guarded_updates(backend: DbBackend, table: &str, cols: &[&str]) -> String {
    match backend {
        // MySQL evaluates assignments left to right, so `version` goes last
        // or the guards would compare against the new value. `VALUES()` is
        // used because MariaDB lacks the `AS new` row alias.
        DbBackend::MySql => {
            let mut sets: Vec<String> = cols
                .iter()
                .map(|c| format!("{c} = IF(VALUES(version) > version, VALUES({c}), {c})"))
                .collect();
            sets.push("version = GREATEST(version, VALUES(version))".into());
            format!("ON DUPLICATE KEY UPDATE {}", sets.join(", "))
        }
        _ => {
            let mut sets: Vec<String> =
                cols.iter().map(|c| format!("{c} = excluded.{c}")).collect();
            sets.push("version = excluded.version".into());
            format!(
                "DO UPDATE SET {} WHERE excluded.version > {table}.version",
                sets.join(", ")
            )
        }
    }
}

pub(crate) async fn chats(db: &impl ConnectionTrait, rows: &[ChatRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let backend = db.get_database_backend();
    let padded = sizes::pad(rows);
    let conflict = match backend {
        DbBackend::MySql => "",
        _ => "ON CONFLICT (application_id, number) ",
    };
    let sql = format!(
        "INSERT INTO chats (application_id, number, name, messages_count, version, created_at, updated_at) \
         VALUES {} {conflict}{}",
        placeholders(padded.len(), 7),
        guarded_updates(backend, "chats", &["name", "updated_at"])
    );
    let mut values: Vec<Value> = Vec::with_capacity(padded.len() * 7);
    for r in padded {
        values.extend([
            r.application_id.into(),
            r.number.into(),
            r.name.clone().into(),
            0i64.into(),
            r.version.into(),
            r.created_at.into(),
            r.updated_at.into(),
        ]);
    }
    let statement = Statement::from_sql_and_values(backend, sql, values);
    execute(db, "INSERT chats", "chats", rows.len(), statement).await
}

pub(crate) async fn messages(db: &impl ConnectionTrait, rows: &[MessageRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let backend = db.get_database_backend();
    let padded = sizes::pad(rows);
    let conflict = match backend {
        DbBackend::MySql => "",
        _ => "ON CONFLICT (application_id, chat_number, number) ",
    };
    let sql = format!(
        "INSERT INTO messages (application_id, chat_number, number, body, version, created_at, updated_at) \
         VALUES {} {conflict}{}",
        placeholders(padded.len(), 7),
        guarded_updates(backend, "messages", &["body", "updated_at"])
    );
    let mut values: Vec<Value> = Vec::with_capacity(padded.len() * 7);
    for r in padded {
        values.extend([
            r.application_id.into(),
            r.chat_number.into(),
            r.number.into(),
            r.body.clone().into(),
            r.version.into(),
            r.created_at.into(),
            r.updated_at.into(),
        ]);
    }
    let statement = Statement::from_sql_and_values(backend, sql, values);
    execute(db, "INSERT messages", "messages", rows.len(), statement).await
}
