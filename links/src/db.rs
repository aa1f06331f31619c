//! Opening the relational database and applying the schema.
use std::{path::Path, time::Duration};

use chat_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};

use crate::error::Result;

/// The default embedded database inside `data_dir`.
pub fn default_sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("chat.db").display())
}

pub async fn connect(url: &str) -> Result<DatabaseConnection> {
    open(url, 8).await
}

/// The one connection every write goes through on SQLite.
///
/// SQLite admits one writer at a time and makes the others wait in its busy
/// handler, which sleeps in steps of up to 100 ms: under load that showed
/// as a p99 of ~100 ms and stalls of over a second. Queuing writers on a
/// one-connection pool instead hands the lock over in FIFO order at once.
pub async fn connect_writer(url: &str) -> Result<DatabaseConnection> {
    open(url, 1).await
}

async fn open(url: &str, sqlite_connections: u32) -> Result<DatabaseConnection> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30));
    if url.starts_with("sqlite:") {
        // One writer at a time is SQLite's model; a small pool keeps readers
        // concurrent without piling up writers that only wait on the lock.
        opts.max_connections(sqlite_connections).min_connections(1);
        opts.map_sqlx_sqlite_opts(|o| {
            // WAL + FULL: a committed enqueue is on disk before the API
            // answers 201, so it survives a process or OS crash.
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .create_if_missing(true)
        });
    } else {
        opts.max_connections(32).min_connections(1);
    }
    Ok(Database::connect(opts).await?)
}

/// Applies pending migrations. On MySQL several roles may start at once,
/// so the run is serialised with a named lock held on one dedicated
/// connection for its whole duration.
pub async fn migrate(db: &DatabaseConnection) -> Result<()> {
    if db.get_database_backend() != DbBackend::MySql {
        Migrator::up(db, None).await?;
        return Ok(());
    }
    use sea_orm::sqlx::{self, Row};
    let mut holder = db
        .get_mysql_connection_pool()
        .acquire()
        .await
        .map_err(|e| sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
    let locked: Option<i64> = sqlx::query("SELECT GET_LOCK('chat_migrations', 120)")
        .fetch_one(&mut *holder)
        .await
        .map_err(|e| sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?
        .try_get(0)
        .unwrap_or(None);
    if locked != Some(1) {
        return Err(crate::StoreError::Unavailable(
            "timed out waiting for another process's migrations".into(),
        ));
    }
    let result = Migrator::up(db, None).await;
    let _ = sqlx::query("SELECT RELEASE_LOCK('chat_migrations')")
        .execute(&mut *holder)
        .await;
    result?;
    Ok(())
}

pub fn is_sqlite(db: &DatabaseConnection) -> bool {
    db.get_database_backend() == DbBackend::Sqlite
}
