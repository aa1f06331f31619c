//! The intake on Redis: numbers, versions and pending entries live under the
//! application's keys ([`crate::homes`]: its own hash tag on one node, its
//! home shard's on a cluster, where the shard's queue stream is too). Every write is accepted
//! by one atomic script, in one round trip shared with concurrent writes
//! (`accept`). Numbers come from counters seeded from the database and
//! bounded by ceilings recorded there (`counters`); pending entries are
//! read and dropped in `pending`.

mod accept;
mod counters;
mod pending;
mod reserve;
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::Script;
use sea_orm::DatabaseConnection;
use serde::Serialize;

use super::{
    Intake, WriteMeta, chat_scope, chat_scope_prefix, message_scope, message_scope_prefix,
};
use crate::{
    homes::{AppKeys, Homes, Layout},
    model::{ChatRow, MessageRow},
    ratelimit::folded::Folded,
};
use accept::Accepter;
use chat_links::{error::Result, redis_link::RedisConn};
use chat_queue::QueueName;
use counters::Counter;
use pending::{FORGET, RECALL};
use reserve::Outcome;

/// How long a read waits for a Redis that refuses it (restarting, loading
/// its data) before it fails.
pub(super) const READ_WAIT: Duration = Duration::from_secs(5);

/// A chat's state as the accept script completes it: without `version`,
/// and without `number` when the script reserves it.
#[derive(Serialize)]
struct ChatState<'a> {
    application_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    number: Option<i64>,
    name: Option<&'a str>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct MessageState<'a> {
    application_id: i64,
    chat_number: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    number: Option<i64>,
    body: &'a str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The JSON of `state` without its opening brace, for the script to prepend
/// the fields it decides.
fn json_tail(state: &impl Serialize) -> Result<String> {
    let mut json = serde_json::to_string(state)?;
    Ok(json.split_off(1))
}

pub struct RedisIntake {
    conn: RedisConn,
    db: DatabaseConnection,
    homes: Arc<Homes>,
    prefix: String,
    accepter: Accepter,
    forget: Script,
    /// A read's limits and its pending entry, in one call.
    recall: Script,
    /// Ceilings being raised ahead of need, so one raise runs per scope.
    raising: Arc<Mutex<HashSet<String>>>,
}

impl RedisIntake {
    pub async fn connect(
        url: &str,
        prefix: &str,
        db: DatabaseConnection,
        homes: Arc<Homes>,
        pending_ttl: Duration,
    ) -> Result<Self> {
        let client = chat_links::redis_link::client(url)?;
        let conn = chat_links::redis_link::manager(&client).await?;
        Ok(Self {
            accepter: Accepter::new(conn.clone(), prefix, pending_ttl.as_secs()),
            conn,
            db,
            homes,
            prefix: prefix.to_owned(),
            forget: Script::new(FORGET),
            recall: Script::new(&format!("{}{RECALL}", crate::ratelimit::GCRA_LUA)),
            raising: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    async fn keys(&self, app_id: i64) -> Result<AppKeys> {
        self.homes.of(app_id).await
    }
}

#[async_trait]
impl Intake for RedisIntake {
    async fn create_chat(
        &self,
        app_id: i64,
        name: Option<String>,
        meta: WriteMeta,
    ) -> Result<ChatRow> {
        let now = chat_links::now();
        let tail = json_tail(&ChatState {
            application_id: app_id,
            number: None,
            name: name.as_deref(),
            created_at: now,
            updated_at: now,
        })?;
        // The script appends the number it reserves.
        let keys = self.keys(app_id).await?;
        let pending = self.pending_key(&keys, &chat_scope_prefix(app_id));
        let outcome = self
            .accept(
                &keys,
                Some(Counter::Chats(app_id)),
                QueueName::Chats,
                &pending,
                &tail,
                meta,
            )
            .await?;
        match outcome {
            Outcome::New { number, version } => Ok(ChatRow {
                application_id: app_id,
                number,
                name,
                version,
                created_at: now,
                updated_at: now,
            }),
            Outcome::Earlier(state) => Ok(serde_json::from_str(&state)?),
        }
    }

    async fn update_chat(
        &self,
        current: &ChatRow,
        name: Option<String>,
        meta: WriteMeta,
    ) -> Result<ChatRow> {
        let app_id = current.application_id;
        let now = chat_links::now();
        let tail = json_tail(&ChatState {
            application_id: app_id,
            number: Some(current.number),
            name: name.as_deref(),
            created_at: current.created_at,
            updated_at: now,
        })?;
        let keys = self.keys(app_id).await?;
        let pending = self.pending_key(&keys, &chat_scope(app_id, current.number));
        let outcome = self
            .accept(&keys, None, QueueName::Chats, &pending, &tail, meta)
            .await?;
        match outcome {
            Outcome::New { version, .. } => Ok(ChatRow {
                name,
                version,
                updated_at: now,
                ..current.clone()
            }),
            Outcome::Earlier(state) => Ok(serde_json::from_str(&state)?),
        }
    }

    async fn create_message(
        &self,
        app_id: i64,
        chat_number: i64,
        body: String,
        meta: WriteMeta,
    ) -> Result<MessageRow> {
        let now = chat_links::now();
        let tail = json_tail(&MessageState {
            application_id: app_id,
            chat_number,
            number: None,
            body: &body,
            created_at: now,
            updated_at: now,
        })?;
        let keys = self.keys(app_id).await?;
        let pending = self.pending_key(&keys, &message_scope_prefix(app_id, chat_number));
        let outcome = self
            .accept(
                &keys,
                Some(Counter::Messages(app_id, chat_number)),
                QueueName::Messages,
                &pending,
                &tail,
                meta,
            )
            .await?;
        match outcome {
            Outcome::New { number, version } => Ok(MessageRow {
                application_id: app_id,
                chat_number,
                number,
                body,
                version,
                created_at: now,
                updated_at: now,
            }),
            Outcome::Earlier(state) => Ok(serde_json::from_str(&state)?),
        }
    }

    async fn update_message(
        &self,
        current: &MessageRow,
        body: String,
        meta: WriteMeta,
    ) -> Result<MessageRow> {
        let app_id = current.application_id;
        let now = chat_links::now();
        let tail = json_tail(&MessageState {
            application_id: app_id,
            chat_number: current.chat_number,
            number: Some(current.number),
            body: &body,
            created_at: current.created_at,
            updated_at: now,
        })?;
        let scope = message_scope(app_id, current.chat_number, current.number);
        let keys = self.keys(app_id).await?;
        let pending = self.pending_key(&keys, &scope);
        let outcome = self
            .accept(&keys, None, QueueName::Messages, &pending, &tail, meta)
            .await?;
        match outcome {
            Outcome::New { version, .. } => Ok(MessageRow {
                body,
                version,
                updated_at: now,
                ..current.clone()
            }),
            Outcome::Earlier(state) => Ok(serde_json::from_str(&state)?),
        }
    }

    async fn forget_chats(&self, persisted: &[ChatRow]) -> Result<()> {
        let mut entries = Vec::with_capacity(persisted.len());
        for r in persisted {
            let keys = self.keys(r.application_id).await?;
            let scope = chat_scope(r.application_id, r.number);
            entries.push((self.pending_key(&keys, &scope), r.version));
        }
        self.forget(entries).await
    }

    async fn forget_messages(&self, persisted: &[MessageRow]) -> Result<()> {
        let mut entries = Vec::with_capacity(persisted.len());
        for r in persisted {
            let keys = self.keys(r.application_id).await?;
            let scope = message_scope(r.application_id, r.chat_number, r.number);
            entries.push((self.pending_key(&keys, &scope), r.version));
        }
        self.forget(entries).await
    }

    async fn pending_chat(
        &self,
        app_id: i64,
        number: i64,
        limits: Option<&Folded>,
    ) -> Result<Option<ChatRow>> {
        self.recall(app_id, &chat_scope(app_id, number), limits)
            .await
    }

    async fn pending_message(
        &self,
        app_id: i64,
        chat_number: i64,
        number: i64,
        limits: Option<&Folded>,
    ) -> Result<Option<MessageRow>> {
        let scope = message_scope(app_id, chat_number, number);
        self.recall(app_id, &scope, limits).await
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// A request's limits are keyed by token and by address, not by
    /// application: on a cluster they sit on other slots than its accept.
    fn folds_rate_limits(&self) -> bool {
        self.homes.layout() == Layout::Node
    }
}

#[cfg(test)]
mod tests;
