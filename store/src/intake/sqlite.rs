//! The embedded intake: counter, version, pending entry and job are written
//! in one SQLite transaction, so an accepted write is all-or-nothing and no
//! number is ever skipped.
use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, FromQueryResult,
    Statement, TransactionTrait,
};

use super::{Intake, chat_scope, message_scope};
use crate::{
    error::Result,
    model::{ChatRow, MessageRow},
    queue::{QueueName, SqliteQueue},
    repo,
};

pub struct SqliteIntake {
    /// Reads of pending entries.
    db: DatabaseConnection,
    /// The intake transactions.
    writer: DatabaseConnection,
    queue: Arc<SqliteQueue>,
    pending_ttl: Duration,
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
        Self {
            db,
            writer,
            queue,
            pending_ttl,
        }
    }

    /// Takes the next number of a counter, seeding a missing counter from
    /// the highest persisted number. The first statement is a write, so the
    /// transaction takes SQLite's write lock at once and concurrent intakes
    /// wait on the busy timeout instead of failing a read-to-write upgrade.
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

    /// The application's next version: `max(last + 1, now in µs)`.
    async fn version(txn: &DatabaseTransaction, app_id: i64) -> Result<i64> {
        let now = crate::time::now_micros();
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
        &self,
        txn: &DatabaseTransaction,
        scope: &str,
        version: i64,
        state: &str,
    ) -> Result<()> {
        let expires = crate::now_millis() + self.pending_ttl.as_millis() as i64;
        txn.execute_raw(stmt(
            "INSERT INTO pending_rows (scope, version, state, expires_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (scope) DO UPDATE SET version = excluded.version, state = excluded.state, \
             expires_at = excluded.expires_at WHERE excluded.version > pending_rows.version",
            vec![scope.into(), version.into(), state.into(), expires.into()],
        ))
        .await?;
        Ok(())
    }

    async fn recall<T: serde::de::DeserializeOwned>(&self, scope: &str) -> Result<Option<T>> {
        let row = State::find_by_statement(stmt(
            "SELECT state FROM pending_rows WHERE scope = ? AND expires_at > ?",
            vec![scope.into(), crate::now_millis().into()],
        ))
        .one(&self.db)
        .await?;
        Ok(match row {
            Some(r) => Some(serde_json::from_str(&r.state)?),
            None => None,
        })
    }

    async fn commit(
        &self,
        txn: DatabaseTransaction,
        queue: QueueName,
        scope: &str,
        version: i64,
        json: String,
    ) -> Result<()> {
        self.remember(&txn, scope, version, &json).await?;
        SqliteQueue::insert(&txn, queue, json).await?;
        txn.commit().await?;
        self.queue.notify();
        Ok(())
    }
}

#[async_trait]
impl Intake for SqliteIntake {
    async fn create_chat(&self, app_id: i64, name: Option<String>) -> Result<ChatRow> {
        let txn = self.writer.begin().await?;
        let number = Self::next(&txn, &format!("chats:{app_id}"), async |t| {
            repo::chats::max_number(t, app_id).await
        })
        .await?;
        let version = Self::version(&txn, app_id).await?;
        let now = crate::now();
        let row = ChatRow {
            application_id: app_id,
            number,
            name,
            version,
            created_at: now,
            updated_at: now,
        };
        let json = serde_json::to_string(&row)?;
        self.commit(
            txn,
            QueueName::Chats,
            &chat_scope(app_id, number),
            version,
            json,
        )
        .await?;
        Ok(row)
    }

    async fn update_chat(&self, current: &ChatRow, name: Option<String>) -> Result<ChatRow> {
        let txn = self.writer.begin().await?;
        let version = Self::version(&txn, current.application_id).await?;
        let row = ChatRow {
            name,
            version,
            updated_at: crate::now(),
            ..current.clone()
        };
        let json = serde_json::to_string(&row)?;
        let scope = chat_scope(row.application_id, row.number);
        self.commit(txn, QueueName::Chats, &scope, version, json)
            .await?;
        Ok(row)
    }

    async fn create_message(
        &self,
        app_id: i64,
        chat_number: i64,
        body: String,
    ) -> Result<MessageRow> {
        let txn = self.writer.begin().await?;
        let number = Self::next(
            &txn,
            &format!("messages:{app_id}:{chat_number}"),
            async |t| repo::messages::max_number(t, app_id, chat_number).await,
        )
        .await?;
        let version = Self::version(&txn, app_id).await?;
        let now = crate::now();
        let row = MessageRow {
            application_id: app_id,
            chat_number,
            number,
            body,
            version,
            created_at: now,
            updated_at: now,
        };
        let json = serde_json::to_string(&row)?;
        let scope = message_scope(app_id, chat_number, number);
        self.commit(txn, QueueName::Messages, &scope, version, json)
            .await?;
        Ok(row)
    }

    async fn update_message(&self, current: &MessageRow, body: String) -> Result<MessageRow> {
        let txn = self.writer.begin().await?;
        let version = Self::version(&txn, current.application_id).await?;
        let row = MessageRow {
            body,
            version,
            updated_at: crate::now(),
            ..current.clone()
        };
        let json = serde_json::to_string(&row)?;
        let scope = message_scope(row.application_id, row.chat_number, row.number);
        self.commit(txn, QueueName::Messages, &scope, version, json)
            .await?;
        Ok(row)
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
                vec![crate::now_millis().into()],
            ))
            .await?;
        Ok(done.rows_affected())
    }
}
