use thiserror::Error;

use crate::redis_link;

/// Failures of the storage layer. Callers branch on `NotFound`,
/// `Unavailable` (and [`StoreError::is_unavailable`]) and `OutcomeUnknown`;
/// everything else is an internal error to them.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A write was sent and its answer was lost (a timeout, a connection
    /// cut after sending): it may or may not have been applied.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("search: {0}")]
    Search(String),
    /// Search is out of reach or overloaded (unreachable, a timeout, 429 or
    /// a 5xx): a request may be tried again later.
    #[error("search unavailable: {0}")]
    SearchUnavailable(String),
    /// This process has no search index: no `ELASTICSEARCH_URL`, and a
    /// role whose embedded index no other role could share.
    #[error("search is not configured")]
    SearchNotConfigured,
    /// A rate limit folded into the write refused it; nothing was written.
    /// The verdict is in the `Folded` limits the write carried.
    #[error("rate limited")]
    RateLimited,
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Whether the failure is a backend being out of reach, down, overloaded
    /// or refusing writes for a while (worth a 503 and a retry, and never
    /// worth spending a job's attempt on) rather than a fault in the request,
    /// the data or the code.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_)
            | StoreError::OutcomeUnknown(_)
            | StoreError::SearchUnavailable(_) => true,
            StoreError::Db(e) => db_outage(e),
            StoreError::Redis(e) => redis_link::is_outage(e),
            _ => false,
        }
    }

    /// The same failure again, for another caller it answers (one group's
    /// failure answers each of its callers): its class, as
    /// [`is_unavailable`](Self::is_unavailable) and the callers' matches
    /// see it, and its text, without the source error, which cannot be
    /// cloned.
    pub fn replicate(&self) -> StoreError {
        match self {
            StoreError::NotFound => StoreError::NotFound,
            StoreError::RateLimited => StoreError::RateLimited,
            StoreError::SearchNotConfigured => StoreError::SearchNotConfigured,
            StoreError::OutcomeUnknown(s) => StoreError::OutcomeUnknown(s.clone()),
            StoreError::SearchUnavailable(s) => StoreError::SearchUnavailable(s.clone()),
            StoreError::Search(s) => StoreError::Search(s.clone()),
            e if e.is_unavailable() => StoreError::Unavailable(e.to_string()),
            e => StoreError::Other(e.to_string()),
        }
    }

    /// Whether the failure is contention between writers (a deadlock, a
    /// lock wait that timed out, SQLite busy): the same write is likely to
    /// succeed if simply tried again, and says nothing about the backend's
    /// health.
    pub fn is_contention(&self) -> bool {
        let StoreError::Db(e) = self else {
            return false;
        };
        database_code(e).is_some_and(|code| ["1205", "1213", "5", "6"].contains(&code.as_str()))
    }
}

/// The server's error code of a database error, when it has one.
fn database_code(e: &sea_orm::DbErr) -> Option<String> {
    use sea_orm::{DbErr, RuntimeErr, sqlx::Error as Sqlx};
    match e {
        DbErr::Conn(RuntimeErr::SqlxError(s))
        | DbErr::Exec(RuntimeErr::SqlxError(s))
        | DbErr::Query(RuntimeErr::SqlxError(s)) => match s.as_ref() {
            Sqlx::Database(d) => d.code().map(|c| c.into_owned()),
            _ => None,
        },
        _ => None,
    }
}

/// MySQL / MariaDB server errors that mean "not now" rather than "never":
/// too many connections, the server shutting down or read-only (a failover
/// in progress), a connection killed, a lock or statement timeout, a
/// deadlock.
const MYSQL_TRANSIENT: &[&str] = &[
    "1040", // too many connections
    "1053", // server shutdown in progress
    "1152", "1153", "1154", "1155", "1156", "1157", "1158", "1159", "1160", "1161", // network
    "1203", // max_user_connections
    "1205", // lock wait timeout
    "1213", // deadlock
    "1226", // user resource exceeded
    "1290", // --read-only
    "1317", // query interrupted
    "1792", // read-only transaction
    "1836", // read-only mode
    "1927", // connection killed (MariaDB)
    "2006", "2013", // server gone away, lost connection
    "3024", // max execution time
    "4031", // disconnected by the server for inactivity
];

/// SQLite result codes that pass: busy, locked, out of disk, I/O trouble.
const SQLITE_TRANSIENT: &[&str] = &["5", "6", "10", "13", "14", "261", "262", "517"];

/// Whether a database error is an outage rather than a fault of the
/// statement.
fn db_outage(e: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr, sqlx::Error as Sqlx};
    let runtime = match e {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(r) | DbErr::Exec(r) | DbErr::Query(r) => r,
        _ => return false,
    };
    let RuntimeErr::SqlxError(sqlx) = runtime else {
        // sea-orm's own runtime errors are connection trouble reported as
        // text (a closed pool, a lost connection); statements fail as sqlx.
        return matches!(e, DbErr::Conn(_));
    };
    match sqlx.as_ref() {
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed
        | Sqlx::Protocol(_) => true,
        Sqlx::Database(_) => database_code(e).is_some_and(|code| {
            MYSQL_TRANSIENT.contains(&code.as_str()) || SQLITE_TRANSIENT.contains(&code.as_str())
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_an_outage_and_a_bad_statement_is_not() {
        let io = sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(
            sea_orm::sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        )));
        assert!(StoreError::Db(io).is_unavailable());
        let acquire = sea_orm::DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout);
        assert!(StoreError::Db(acquire).is_unavailable());
        let decode = sea_orm::DbErr::Type("not a number".into());
        assert!(!StoreError::Db(decode).is_unavailable());
        assert!(!StoreError::Other("bug".into()).is_unavailable());
        assert!(StoreError::SearchUnavailable("503".into()).is_unavailable());
    }
}
