//! The embedded intake: counter, version, pending entry and job are written
//! in one SQLite transaction, so an accepted write is all-or-nothing and no
//! number is ever skipped.
//!
//! Writes are group-committed: one task owns the intake transactions and
//! applies every request that queued up while the previous commit ran in
//! one transaction, so one fsync serves many requests. If a group fails,
//! its requests are retried one per transaction, so one bad request fails
//! alone.
use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, FromQueryResult,
    Statement, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

use super::{Intake, WriteMeta, chat_scope, message_scope};
use crate::{
    idempotency::{self, Link},
    model::{ChatRow, MessageRow},
    repo,
};
use chat_links::error::{Result, StoreError};
use chat_queue::{QueueName, SqliteQueue};

/// Most requests applied in one transaction.
const GROUP: usize = 256;

pub struct SqliteIntake {
    /// Reads of pending entries.
    db: DatabaseConnection,
    /// Maintenance writes outside the group commits.
    writer: DatabaseConnection,
    requests: mpsc::Sender<Request>,
}

enum Op {
    CreateChat {
        app_id: i64,
        name: Option<String>,
    },
    UpdateChat {
        current: ChatRow,
        name: Option<String>,
    },
    CreateMessage {
        app_id: i64,
        chat_number: i64,
        body: String,
    },
    UpdateMessage {
        current: MessageRow,
        body: String,
    },
}

enum Accepted {
    Chat(ChatRow),
    Message(MessageRow),
    /// The state an earlier run under the same idempotency record wrote.
    Earlier(String),
}

impl Accepted {
    fn chat(self) -> Result<ChatRow> {
        match self {
            Accepted::Chat(row) => Ok(row),
            Accepted::Earlier(state) => Ok(serde_json::from_str(&state)?),
            Accepted::Message(_) => unreachable!("a chat op yields a chat"),
        }
    }

    fn message(self) -> Result<MessageRow> {
        match self {
            Accepted::Message(row) => Ok(row),
            Accepted::Earlier(state) => Ok(serde_json::from_str(&state)?),
            Accepted::Chat(_) => unreachable!("a message op yields a message"),
        }
    }
}

struct Request {
    op: Op,
    /// The sender's traceparent, stored with the job, and the idempotency
    /// run the write belongs to.
    meta: WriteMeta,
    reply: oneshot::Sender<Result<Accepted>>,
}

#[derive(FromQueryResult)]
struct Value {
    value: i64,
}

#[derive(FromQueryResult)]
struct State {
    state: String,
}

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

impl SqliteIntake {
    pub fn new(
        db: DatabaseConnection,
        writer: DatabaseConnection,
        queue: Arc<SqliteQueue>,
        pending_ttl: Duration,
    ) -> Self {
        let (requests, rx) = mpsc::channel(GROUP * 4);
        let committer = Committer {
            writer: writer.clone(),
            queue,
            pending_ttl,
        };
        tokio::spawn(committer.run(rx));
        Self {
            db,
            writer,
            requests,
        }
    }

    async fn submit(&self, op: Op, meta: WriteMeta) -> Result<Accepted> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { op, meta, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the intake has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the intake dropped the request".into()))?
    }

    /// Deletes each pending entry whose version is at most the persisted
    /// one, in one statement per 400 entries.
    async fn forget(&self, entries: &[(String, i64)]) -> Result<()> {
        for chunk in entries.chunks(400) {
            let pairs = vec!["(?, ?)"; chunk.len()].join(", ");
            let values = chunk
                .iter()
                .flat_map(|(scope, version)| [scope.clone().into(), (*version).into()])
                .collect();
            self.writer
                .execute_raw(stmt(
                    &format!(
                        "DELETE FROM pending_rows WHERE rowid IN (SELECT p.rowid \
                         FROM pending_rows p JOIN (VALUES {pairs}) AS v \
                         ON p.scope = v.column1 AND p.version <= v.column2)"
                    ),
                    values,
                ))
                .await?;
        }
        Ok(())
    }

    async fn recall<T: serde::de::DeserializeOwned>(&self, scope: &str) -> Result<Option<T>> {
        let row = State::find_by_statement(stmt(
            "SELECT state FROM pending_rows WHERE scope = ? AND expires_at > ?",
            vec![scope.into(), chat_links::now_millis().into()],
        ))
        .one(&self.db)
        .await?;
        Ok(match row {
            Some(r) => Some(serde_json::from_str(&r.state)?),
            None => None,
        })
    }
}

struct Committer {
    writer: DatabaseConnection,
    queue: Arc<SqliteQueue>,
    pending_ttl: Duration,
}

impl Committer {
    async fn run(self, mut rx: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(GROUP);
        while rx.recv_many(&mut batch, GROUP).await > 0 {
            let group = std::mem::take(&mut batch);
            self.commit(group).await;
        }
    }

    async fn commit(&self, group: Vec<Request>) {
        let ops: Vec<(&Op, &WriteMeta)> = group.iter().map(|r| (&r.op, &r.meta)).collect();
        match self.apply_all(&ops).await {
            Ok(results) => {
                self.queue.notify();
                for (request, result) in group.into_iter().zip(results) {
                    let _ = request.reply.send(Ok(result));
                }
            }
            Err(e) if group.len() == 1 => {
                let request = group.into_iter().next().expect("one request");
                let _ = request.reply.send(Err(e));
            }
            Err(e) => {
                tracing::warn!(requests = group.len(), error = %e, "intake group failed; retrying one by one");
                for request in group {
                    let result = self
                        .apply_all(&[(&request.op, &request.meta)])
                        .await
                        .map(|mut r| r.remove(0));
                    if result.is_ok() {
                        self.queue.notify();
                    }
                    let _ = request.reply.send(result);
                }
            }
        }
    }

    /// Applies every op in one transaction, or none of them.
    async fn apply_all(&self, ops: &[(&Op, &WriteMeta)]) -> Result<Vec<Accepted>> {
        let txn = self.writer.begin().await?;
        let mut out = Vec::with_capacity(ops.len());
        for (op, meta) in ops {
            let link = meta.idempotency.as_ref();
            if let Some(state) = match link {
                Some(link) => earlier(&txn, link).await?,
                None => None,
            } {
                out.push(Accepted::Earlier(state));
                continue;
            }
            let accepted = self.apply(&txn, op, meta.trace.as_deref()).await?;
            if let Some(link) = link {
                record(&txn, link, &accepted).await?;
            }
            out.push(accepted);
        }
        txn.commit().await?;
        Ok(out)
    }

    async fn apply(
        &self,
        txn: &DatabaseTransaction,
        op: &Op,
        trace: Option<&str>,
    ) -> Result<Accepted> {
        match op {
            Op::CreateChat { app_id, name } => {
                let app_id = *app_id;
                let number = next(txn, &format!("chats:{app_id}"), async |t| {
                    repo::chats::max_number(t, app_id).await
                })
                .await?;
                let now = chat_links::now();
                let row = ChatRow {
                    application_id: app_id,
                    number,
                    name: name.clone(),
                    version: version(txn, app_id).await?,
                    created_at: now,
                    updated_at: now,
                };
                self.stage(
                    txn,
                    QueueName::Chats,
                    &chat_scope(app_id, number),
                    row.version,
                    &row,
                    trace,
                )
                .await?;
                Ok(Accepted::Chat(row))
            }
            Op::UpdateChat { current, name } => {
                let row = ChatRow {
                    name: name.clone(),
                    version: version(txn, current.application_id).await?,
                    updated_at: chat_links::now(),
                    ..current.clone()
                };
                let scope = chat_scope(row.application_id, row.number);
                self.stage(txn, QueueName::Chats, &scope, row.version, &row, trace)
                    .await?;
                Ok(Accepted::Chat(row))
            }
            Op::CreateMessage {
                app_id,
                chat_number,
                body,
            } => {
                let (app_id, chat_number) = (*app_id, *chat_number);
                let number = next(
                    txn,
                    &format!("messages:{app_id}:{chat_number}"),
                    async |t| repo::messages::max_number(t, app_id, chat_number).await,
                )
                .await?;
                let now = chat_links::now();
                let row = MessageRow {
                    application_id: app_id,
                    chat_number,
                    number,
                    body: body.clone(),
                    version: version(txn, app_id).await?,
                    created_at: now,
                    updated_at: now,
                };
                let scope = message_scope(app_id, chat_number, number);
                self.stage(txn, QueueName::Messages, &scope, row.version, &row, trace)
                    .await?;
                Ok(Accepted::Message(row))
            }
            Op::UpdateMessage { current, body } => {
                let row = MessageRow {
                    body: body.clone(),
                    version: version(txn, current.application_id).await?,
                    updated_at: chat_links::now(),
                    ..current.clone()
                };
                let scope = message_scope(row.application_id, row.chat_number, row.number);
                self.stage(txn, QueueName::Messages, &scope, row.version, &row, trace)
                    .await?;
                Ok(Accepted::Message(row))
            }
        }
    }

    /// Records the pending entry and enqueues the job for one row.
    async fn stage(
        &self,
        txn: &DatabaseTransaction,
        queue: QueueName,
        scope: &str,
        version: i64,
        row: &impl serde::Serialize,
        trace: Option<&str>,
    ) -> Result<()> {
        let json = serde_json::to_string(row)?;
        remember(self.pending_ttl, txn, scope, version, &json).await?;
        SqliteQueue::insert(txn, queue, json, trace).await
    }
}

/// Takes the next number of a counter, seeding a missing counter from
/// the highest persisted number. The first statement is a write, so the
/// transaction takes SQLite's write lock at once: a writer in another
/// process (`chat api` beside `chat worker` on one file) then waits on the
/// busy timeout instead of failing a read-to-write upgrade.
async fn next(
    txn: &DatabaseTransaction,
    scope: &str,
    highest: impl AsyncFnOnce(&DatabaseTransaction) -> Result<i64>,
) -> Result<i64> {
    let bumped = Value::find_by_statement(stmt(
        "UPDATE counters SET value = value + 1 WHERE scope = ? RETURNING value",
        vec![scope.into()],
    ))
    .one(txn)
    .await?;
    if let Some(v) = bumped {
        return Ok(v.value);
    }
    let first = highest(txn).await? + 1;
    txn.execute_raw(stmt(
        "INSERT INTO counters (scope, value) VALUES (?, ?)",
        vec![scope.into(), first.into()],
    ))
    .await?;
    Ok(first)
}

/// The state an earlier run under this idempotency record accepted.
async fn earlier(txn: &DatabaseTransaction, link: &Link) -> Result<Option<String>> {
    #[derive(FromQueryResult)]
    struct Earlier {
        accepted: Option<String>,
    }
    let (scope, key) = idempotency::sqlite_record_id(&link.key);
    let row = Earlier::find_by_statement(stmt(
        "SELECT accepted FROM idempotency_keys WHERE scope = ? AND key = ?",
        vec![scope.into(), key.into()],
    ))
    .one(txn)
    .await?;
    Ok(row.and_then(|r| r.accepted))
}

/// Records the accepted state in the idempotency record, in the write's
/// own transaction.
async fn record(txn: &DatabaseTransaction, link: &Link, accepted: &Accepted) -> Result<()> {
    let state = match accepted {
        Accepted::Chat(row) => serde_json::to_string(row)?,
        Accepted::Message(row) => serde_json::to_string(row)?,
        Accepted::Earlier(state) => state.clone(),
    };
    let (scope, key) = idempotency::sqlite_record_id(&link.key);
    txn.execute_raw(stmt(
        "UPDATE idempotency_keys SET accepted = ? WHERE scope = ? AND key = ?",
        vec![state.into(), scope.into(), key.into()],
    ))
    .await?;
    Ok(())
}

/// The application's next version: `max(last + 1, now in µs)`.
async fn version(txn: &DatabaseTransaction, app_id: i64) -> Result<i64> {
    let now = chat_links::now_micros();
    let v = Value::find_by_statement(stmt(
        "INSERT INTO counters (scope, value) VALUES (?, ?) \
         ON CONFLICT (scope) DO UPDATE SET value = MAX(counters.value + 1, excluded.value) \
         RETURNING value",
        vec![format!("v:{app_id}").into(), now.into()],
    ))
    .one(txn)
    .await?;
    Ok(v.map(|v| v.value).unwrap_or(now))
}

async fn remember(
    pending_ttl: Duration,
    txn: &DatabaseTransaction,
    scope: &str,
    version: i64,
    state: &str,
) -> Result<()> {
    let expires = chat_links::now_millis() + pending_ttl.as_millis() as i64;
    txn.execute_raw(stmt(
        "INSERT INTO pending_rows (scope, version, state, expires_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (scope) DO UPDATE SET version = excluded.version, state = excluded.state, \
         expires_at = excluded.expires_at WHERE excluded.version > pending_rows.version",
        vec![scope.into(), version.into(), state.into(), expires.into()],
    ))
    .await?;
    Ok(())
}

#[async_trait]
impl Intake for SqliteIntake {
    async fn create_chat(
        &self,
        app_id: i64,
        name: Option<String>,
        meta: WriteMeta,
    ) -> Result<ChatRow> {
        self.submit(Op::CreateChat { app_id, name }, meta)
            .await?
            .chat()
    }

    async fn update_chat(
        &self,
        current: &ChatRow,
        name: Option<String>,
        meta: WriteMeta,
    ) -> Result<ChatRow> {
        let op = Op::UpdateChat {
            current: current.clone(),
            name,
        };
        self.submit(op, meta).await?.chat()
    }

    async fn create_message(
        &self,
        app_id: i64,
        chat_number: i64,
        body: String,
        meta: WriteMeta,
    ) -> Result<MessageRow> {
        let op = Op::CreateMessage {
            app_id,
            chat_number,
            body,
        };
        self.submit(op, meta).await?.message()
    }

    async fn update_message(
        &self,
        current: &MessageRow,
        body: String,
        meta: WriteMeta,
    ) -> Result<MessageRow> {
        let op = Op::UpdateMessage {
            current: current.clone(),
            body,
        };
        self.submit(op, meta).await?.message()
    }

    async fn forget_chats(&self, persisted: &[ChatRow]) -> Result<()> {
        let entries: Vec<(String, i64)> = persisted
            .iter()
            .map(|r| (chat_scope(r.application_id, r.number), r.version))
            .collect();
        self.forget(&entries).await
    }

    async fn forget_messages(&self, persisted: &[MessageRow]) -> Result<()> {
        let entries: Vec<(String, i64)> = persisted
            .iter()
            .map(|r| {
                (
                    message_scope(r.application_id, r.chat_number, r.number),
                    r.version,
                )
            })
            .collect();
        self.forget(&entries).await
    }

    async fn pending_chat(&self, app_id: i64, number: i64) -> Result<Option<ChatRow>> {
        self.recall(&chat_scope(app_id, number)).await
    }

    async fn pending_message(
        &self,
        app_id: i64,
        chat_number: i64,
        number: i64,
    ) -> Result<Option<MessageRow>> {
        self.recall(&message_scope(app_id, chat_number, number))
            .await
    }

    async fn ping(&self) -> Result<()> {
        self.db.ping().await?;
        Ok(())
    }

    async fn purge_expired(&self) -> Result<u64> {
        let done = self
            .writer
            .execute_raw(stmt(
                "DELETE FROM pending_rows WHERE expires_at < ?",
                vec![chat_links::now_millis().into()],
            ))
            .await?;
        Ok(done.rows_affected())
    }
}
