//! Dashboard sessions that were logged out. A session cookie is signed,
//! not stored, so any API process accepts it without asking anyone; a
//! logout must therefore be written where every process looks, until the
//! cookie would have expired on its own.
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement};

use chat_links::error::Result;

/// Records that the session with this signature ended; also forgets
/// revocations whose cookies have expired anyway.
pub async fn revoke(db: &impl ConnectionTrait, signature: &str, expires_at: i64) -> Result<()> {
    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        "DELETE FROM admin_revoked_sessions WHERE expires_at < ?",
        [chat_links::now_millis().into()],
    ))
    .await?;
    let verb = match backend {
        DbBackend::MySql => "INSERT IGNORE",
        _ => "INSERT OR IGNORE",
    };
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        format!("{verb} INTO admin_revoked_sessions (signature, expires_at) VALUES (?, ?)"),
        [signature.into(), expires_at.into()],
    ))
    .await?;
    Ok(())
}

/// Whether the session with this signature was logged out.
pub async fn is_revoked(db: &impl ConnectionTrait, signature: &str) -> Result<bool> {
    #[derive(FromQueryResult)]
    struct Count {
        n: i64,
    }
    let found = Count::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT COUNT(*) AS n FROM admin_revoked_sessions WHERE signature = ?",
        [signature.into()],
    ))
    .one(db)
    .await?;
    Ok(found.is_some_and(|c| c.n > 0))
}
