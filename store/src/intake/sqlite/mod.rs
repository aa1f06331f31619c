//! The embedded intake: counter, version and the write itself go in one
//! SQLite transaction, so an accepted write is all-or-nothing and no number
//! is ever skipped.
//!
//! A committed SQLite transaction is already a durable write, so a new
//! message's row is written in it, with its chat's count mark and one index
//! job for the whole group. Chats, updates and creates under an
//! `Idempotency-Key` are few: they keep the job path (pending entry and
//! persistence job), as on the distributed profile.
//!
//! Writes are group-committed: one task owns the intake transactions and
//! applies every request that queued up while the previous commit ran in
//! one transaction, so one fsync serves many requests. If a group fails,
//! its requests are retried one per transaction, so one bad request fails
//! alone.
use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chat_links::grouping::{Group, Grouping, Stopped};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement};

use super::{Intake, WriteMeta, chat_scope, message_scope};
use crate::{
    idempotency::{self, Link},
    model::{ChatRow, MessageRow},
    ratelimit::folded::Folded,
    repo,
};
use chat_links::error::{Result, StoreError};
use chat_queue::{QueueName, SqliteQueue};

mod commit;
mod counters;

use commit::Committer;

/// Most requests applied in one transaction.
const GROUP: usize = 256;

pub struct SqliteIntake {
    /// Reads of pending entries.
    db: DatabaseConnection,
    /// Maintenance writes outside the group commits.
    writer: DatabaseConnection,
    /// Accepts, committed a group per transaction.
    requests: Group<Request, Result<Accepted>>,
}

pub(super) enum Op {
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

impl Op {
    /// The queue of the job a staged op enqueues.
    fn queue(&self) -> QueueName {
        match self {
            Op::CreateChat { .. } | Op::UpdateChat { .. } => QueueName::Chats,
            Op::CreateMessage { .. } | Op::UpdateMessage { .. } => QueueName::Messages,
        }
    }
}

pub(super) enum Accepted {
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

pub(super) struct Request {
    op: Op,
    /// The sender's traceparent, stored with the job, and the idempotency
    /// run the write belongs to.
    meta: WriteMeta,
}

#[derive(FromQueryResult)]
pub(super) struct Value {
    value: i64,
}

#[derive(FromQueryResult)]
pub(super) struct State {
    state: String,
}

pub(super) fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

impl SqliteIntake {
    pub fn new(
        db: DatabaseConnection,
        writer: DatabaseConnection,
        queue: Arc<SqliteQueue>,
        pending_ttl: Duration,
    ) -> Self {
        let committer = Committer {
            writer: writer.clone(),
            queue,
            pending_ttl,
        };
        // One writer: a group commits while the next gathers.
        let grouping = Grouping {
            max: GROUP,
            linger: Duration::ZERO,
            in_flight: 1,
        };
        Self {
            db,
            writer,
            requests: Group::spawn(Arc::new(committer), grouping),
        }
    }

    async fn submit(&self, op: Op, meta: WriteMeta) -> Result<Accepted> {
        self.requests
            .ask(Request { op, meta })
            .await
            .map_err(|Stopped| StoreError::Unavailable("the intake has stopped".into()))?
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

    async fn pending_chat(
        &self,
        app_id: i64,
        number: i64,
        _limits: Option<&Folded>,
    ) -> Result<Option<ChatRow>> {
        self.recall(&chat_scope(app_id, number)).await
    }

    async fn pending_message(
        &self,
        app_id: i64,
        chat_number: i64,
        number: i64,
        _limits: Option<&Folded>,
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
