//! The intake on Redis: numbers, versions and pending entries live under the
//! application's hash tag (`<prefix>{app:<id>}:…`), so each reservation is
//! one atomic script in one cluster slot.
use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use redis::{Client, Script, aio::ConnectionManager};
use sea_orm::DatabaseConnection;

use super::{Intake, chat_scope, message_scope};
use crate::{
    error::{Result, StoreError},
    model::{ChatRow, MessageRow},
    queue::{JobQueue, QueueName, RedisStreamQueue},
    repo,
};

/// Reserves a number (when KEYS[1] is given) and a version.
///
/// The version is `max(last + 1, now in µs)`: it grows per application, and
/// if Redis loses the key it restarts above every version handed out
/// before, so newer writes still win. A missing counter returns -1 instead
/// of starting at 1: the caller seeds it from the database first.
const RESERVE: &str = r#"
local n = 0
if KEYS[1] ~= '' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
  n = redis.call('INCR', KEYS[1])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local v = math.max(last + 1, now)
redis.call('SET', KEYS[2], string.format('%d', v))
return {n, v}
"#;

/// Stores a pending state only if it is newer than the one already there,
/// so two racing updates leave the newest behind.
const SET_PENDING: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"#;

pub struct RedisIntake {
    conn: ConnectionManager,
    db: DatabaseConnection,
    queue: Arc<RedisStreamQueue>,
    prefix: String,
    pending_ttl: Duration,
    reserve: Script,
    set_pending: Script,
}

enum Counter {
    Chats(i64),
    Messages(i64, i64),
}

impl RedisIntake {
    pub async fn connect(
        url: &str,
        prefix: &str,
        db: DatabaseConnection,
        queue: Arc<RedisStreamQueue>,
        pending_ttl: Duration,
    ) -> Result<Self> {
        let client = Client::open(url)?;
        let conn = crate::queue::redis_connection_manager(&client).await?;
        Ok(Self {
            conn,
            db,
            queue,
            prefix: prefix.to_owned(),
            pending_ttl,
            reserve: Script::new(RESERVE),
            set_pending: Script::new(SET_PENDING),
        })
    }

    fn app_key(&self, app_id: i64, rest: &str) -> String {
        format!("{}{{app:{app_id}}}:{rest}", self.prefix)
    }

    fn counter_key(&self, counter: &Counter) -> String {
        match counter {
            Counter::Chats(app) => self.app_key(*app, "chats"),
            Counter::Messages(app, chat) => self.app_key(*app, &format!("messages:{chat}")),
        }
    }

    /// Returns (number, version); number is 0 when no counter is given.
    async fn reserve(&self, app_id: i64, counter: Option<Counter>) -> Result<(i64, i64)> {
        let counter_key = counter
            .as_ref()
            .map(|c| self.counter_key(c))
            .unwrap_or_default();
        let seq_key = self.app_key(app_id, "version");
        for _ in 0..3 {
            let mut conn = self.conn.clone();
            let (n, v): (i64, i64) = self
                .reserve
                .key(&counter_key)
                .key(&seq_key)
                .invoke_async(&mut conn)
                .await?;
            if n >= 0 {
                return Ok((n, v));
            }
            let counter = counter.as_ref().expect("only counters can be missing");
            self.seed(counter, &counter_key).await?;
        }
        Err(StoreError::Unavailable(
            "number counter could not be seeded".into(),
        ))
    }

    /// Seeds a missing counter from the highest persisted number. `SET NX`
    /// lets exactly one of several racing API processes win.
    async fn seed(&self, counter: &Counter, key: &str) -> Result<()> {
        let highest = match counter {
            Counter::Chats(app) => repo::chats::max_number(&self.db, *app).await?,
            Counter::Messages(app, chat) => {
                repo::messages::max_number(&self.db, *app, *chat).await?
            }
        };
        let mut conn = self.conn.clone();
        let won: bool = redis::cmd("SET")
            .arg(key)
            .arg(highest)
            .arg("NX")
            .query_async::<Option<String>>(&mut conn)
            .await?
            .is_some();
        if won {
            tracing::info!(
                key,
                highest,
                "seeded a missing number counter from the database"
            );
        }
        Ok(())
    }

    async fn remember(&self, app_id: i64, scope: &str, version: i64, state: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .set_pending
            .key(self.app_key(app_id, &format!("pending:{scope}")))
            .arg(version)
            .arg(state)
            .arg(self.pending_ttl.as_secs().max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn recall<T: serde::de::DeserializeOwned>(
        &self,
        app_id: i64,
        scope: &str,
    ) -> Result<Option<T>> {
        let mut conn = self.conn.clone();
        let state: Option<String> = redis::cmd("HGET")
            .arg(self.app_key(app_id, &format!("pending:{scope}")))
            .arg("s")
            .query_async(&mut conn)
            .await?;
        Ok(match state {
            Some(s) => Some(serde_json::from_str(&s)?),
            None => None,
        })
    }

    async fn accept_chat(&self, row: ChatRow) -> Result<ChatRow> {
        let json = serde_json::to_string(&row)?;
        // Enqueue first: if the pending entry were written first and the
        // enqueue failed, reads would show a row that never gets persisted.
        self.queue.enqueue(QueueName::Chats, json.clone()).await?;
        let scope = chat_scope(row.application_id, row.number);
        self.remember(row.application_id, &scope, row.version, &json)
            .await?;
        Ok(row)
    }

    async fn accept_message(&self, row: MessageRow) -> Result<MessageRow> {
        let json = serde_json::to_string(&row)?;
        self.queue
            .enqueue(QueueName::Messages, json.clone())
            .await?;
        let scope = message_scope(row.application_id, row.chat_number, row.number);
        self.remember(row.application_id, &scope, row.version, &json)
            .await?;
        Ok(row)
    }
}

#[async_trait]
impl Intake for RedisIntake {
    async fn create_chat(&self, app_id: i64, name: Option<String>) -> Result<ChatRow> {
        let (number, version) = self.reserve(app_id, Some(Counter::Chats(app_id))).await?;
        let now = crate::now();
        self.accept_chat(ChatRow {
            application_id: app_id,
            number,
            name,
            version,
            created_at: now,
            updated_at: now,
        })
        .await
    }

    async fn update_chat(&self, current: &ChatRow, name: Option<String>) -> Result<ChatRow> {
        let (_, version) = self.reserve(current.application_id, None).await?;
        self.accept_chat(ChatRow {
            name,
            version,
            updated_at: crate::now(),
            ..current.clone()
        })
        .await
    }

    async fn create_message(
        &self,
        app_id: i64,
        chat_number: i64,
        body: String,
    ) -> Result<MessageRow> {
        let (number, version) = self
            .reserve(app_id, Some(Counter::Messages(app_id, chat_number)))
            .await?;
        let now = crate::now();
        self.accept_message(MessageRow {
            application_id: app_id,
            chat_number,
            number,
            body,
            version,
            created_at: now,
            updated_at: now,
        })
        .await
    }

    async fn update_message(&self, current: &MessageRow, body: String) -> Result<MessageRow> {
        let (_, version) = self.reserve(current.application_id, None).await?;
        self.accept_message(MessageRow {
            body,
            version,
            updated_at: crate::now(),
            ..current.clone()
        })
        .await
    }

    async fn pending_chat(&self, app_id: i64, number: i64) -> Result<Option<ChatRow>> {
        self.recall(app_id, &chat_scope(app_id, number)).await
    }

    async fn pending_message(
        &self,
        app_id: i64,
        chat_number: i64,
        number: i64,
    ) -> Result<Option<MessageRow>> {
        self.recall(app_id, &message_scope(app_id, chat_number, number))
            .await
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}
