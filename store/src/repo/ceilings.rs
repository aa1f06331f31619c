//! Number ceilings: per number counter, the highest number the Redis intake
//! may hand out, recorded in the database before Redis may go past it.
//!
//! Redis may lose its data (no persistence, the last second under
//! `appendfsync everysec`, an asynchronous replica promoted, a flush). A
//! counter seeded again from the highest *persisted* number would then hand
//! out again numbers that were given to clients but not yet persisted, and
//! one accepted message would overwrite another. Seeded from its ceiling
//! instead, it skips ahead of every number it ever handed out: a loss of
//! Redis data costs a gap in the numbering, never a reused number.
//!
//! Rows live in the `counters` table (scope `ceil:…`), unused otherwise on
//! MySQL.
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement};

use chat_links::error::Result;

/// The scope of the ceiling of an application's chat numbers.
pub fn chats(app_id: i64) -> String {
    format!("ceil:c:{app_id}")
}

/// The scope of the ceiling of a chat's message numbers.
pub fn messages(app_id: i64, chat_number: i64) -> String {
    format!("ceil:m:{app_id}:{chat_number}")
}

#[derive(FromQueryResult)]
struct Value {
    value: i64,
}

/// The ceiling of `scope`, 0 when none was ever recorded.
pub async fn get(db: &impl ConnectionTrait, scope: &str) -> Result<i64> {
    let row = Value::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT value FROM counters WHERE scope = ?",
        [scope.into()],
    ))
    .one(db)
    .await?;
    Ok(row.map_or(0, |r| r.value))
}

/// Raises the ceiling of `scope` to at least `at_least`, and returns it as
/// it now stands (it may be higher: another process raised it further).
pub async fn raise(db: &impl ConnectionTrait, scope: &str, at_least: i64) -> Result<i64> {
    let backend = db.get_database_backend();
    let upsert = match backend {
        DbBackend::MySql => {
            "INSERT INTO counters (scope, value) VALUES (?, ?) \
             ON DUPLICATE KEY UPDATE value = GREATEST(value, VALUES(value))"
        }
        _ => {
            "INSERT INTO counters (scope, value) VALUES (?, ?) \
             ON CONFLICT (scope) DO UPDATE SET value = MAX(value, excluded.value)"
        }
    };
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        upsert,
        [scope.into(), at_least.into()],
    ))
    .await?;
    get(db, scope).await
}
