//! The bare handlers the API is compared with, each run as its own process
//! (`bench limit-server`) and driven by the same generator on the same path
//! shape as the real API:
//! - `incr`: one Redis `INCR` per request, the distributed POST limit;
//! - `group-insert`: one SQLite `INSERT` per request, group-committed (one
//!   transaction per group of the requests that queued while the previous
//!   commit ran), in WAL with `synchronous=FULL` as the product opens it:
//!   a durable write's physical limit on SQLite here, the embedded POST
//!   limit;
//! - `point-select`: one MySQL select by primary key per request, the
//!   distributed GET limit.
use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use clap::ValueEnum;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value};
use tokio::sync::{mpsc, oneshot};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kind {
    Incr,
    GroupInsert,
    PointSelect,
}

/// Most requests in one group commit, as in the product's intake.
const GROUP: usize = 256;

/// Serves `kind` on `port` until the process is killed. `url` is the Redis,
/// SQLite or MySQL URL it works on; `key` names the `INCR` counter.
pub async fn serve(kind: Kind, url: &str, key: &str, port: u16) -> anyhow::Result<()> {
    let app = match kind {
        Kind::Incr => {
            // A cluster URL too: the counter is one key, on one master.
            let link = chat_links::redis_link::client(url)?;
            let conn = chat_links::redis_link::manager(&link).await?;
            Router::new()
                .route("/{*path}", post(incr))
                .with_state((conn, Arc::<str>::from(key)))
        }
        Kind::GroupInsert => {
            let db = chat_links::db::connect_writer(url).await?;
            db.execute_unprepared(
                "CREATE TABLE IF NOT EXISTS bench_limit_messages \
                 (id INTEGER PRIMARY KEY, chat INTEGER NOT NULL, body TEXT NOT NULL)",
            )
            .await?;
            let (tx, rx) = mpsc::channel(GROUP * 4);
            tokio::spawn(commit_groups(db, rx));
            Router::new().route("/{*path}", post(insert)).with_state(tx)
        }
        Kind::PointSelect => {
            let db = chat_links::db::connect(url).await?;
            Router::new().route("/{*path}", get(select)).with_state(db)
        }
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn incr(
    State((mut conn, key)): State<(chat_links::redis_link::RedisConn, Arc<str>)>,
    _body: Bytes,
) -> Result<(StatusCode, String), StatusCode> {
    let n: i64 = redis::cmd("INCR")
        .arg(&*key)
        .query_async(&mut conn)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok((StatusCode::CREATED, format!("{{\"number\":{n}}}")))
}

type Insert = (String, oneshot::Sender<Option<i64>>);

async fn insert(
    State(tx): State<mpsc::Sender<Insert>>,
    body: Bytes,
) -> Result<(StatusCode, String), StatusCode> {
    let (answer, answered) = oneshot::channel();
    let body = String::from_utf8_lossy(&body).into_owned();
    tx.send((body, answer))
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let id = answered
        .await
        .ok()
        .flatten()
        .ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
    Ok((StatusCode::CREATED, format!("{{\"number\":{id}}}")))
}

/// One task owns the writer: each turn takes every request waiting (up to
/// [`GROUP`]) and commits them in one transaction, so one fsync serves the
/// group.
async fn commit_groups(db: DatabaseConnection, mut rx: mpsc::Receiver<Insert>) {
    let mut group = Vec::with_capacity(GROUP);
    while rx.recv_many(&mut group, GROUP).await > 0 {
        let ids = insert_group(&db, &group).await.ok();
        for (i, (_, answer)) in group.drain(..).enumerate() {
            let _ = answer.send(ids.as_ref().map(|ids| ids[i]));
        }
    }
}

async fn insert_group(db: &DatabaseConnection, group: &[Insert]) -> anyhow::Result<Vec<i64>> {
    let txn = db.begin().await?;
    let mut ids = Vec::with_capacity(group.len());
    for (body, _) in group {
        let done = txn
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "INSERT INTO bench_limit_messages (chat, body) VALUES (?, ?)",
                [Value::from(1i64), Value::from(body.clone())],
            ))
            .await?;
        ids.push(done.last_insert_id() as i64);
    }
    txn.commit().await?;
    Ok(ids)
}

/// Reads the message whose primary key is the path's last number.
async fn select(
    State(db): State<DatabaseConnection>,
    Path(path): Path<String>,
) -> Result<String, StatusCode> {
    let id: i64 = path
        .rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or(StatusCode::BAD_REQUEST)?;
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT body, version FROM messages WHERE id = ?",
            [Value::from(id)],
        ))
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?
        .ok_or(StatusCode::NOT_FOUND)?;
    let body: String = row
        .try_get_by_index(0)
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let version: i64 = row
        .try_get_by_index(1)
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(format!(
        "{{\"number\":{id},\"body\":{body:?},\"version\":{version}}}"
    ))
}
