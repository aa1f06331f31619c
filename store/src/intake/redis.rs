//! The intake on Redis: numbers, versions and pending entries live under the
//! application's hash tag (`<prefix>{app:<id>}:…`). Every write is accepted
//! by one atomic script, in one round trip shared with concurrent writes
//! (see `redis_accept`).
use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::{Client, aio::ConnectionManager};
use sea_orm::DatabaseConnection;
use serde::Serialize;

use super::{
    Intake, chat_scope, chat_scope_prefix, message_scope, message_scope_prefix,
    redis_accept::{Accept, Accepter, LIMITS_PER_ACCEPT},
};
use crate::{
    error::{Result, StoreError},
    model::{ChatRow, MessageRow},
    queue::{QueueName, RedisStreamQueue},
    ratelimit::{self, folded},
    repo,
};

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
    conn: ConnectionManager,
    db: DatabaseConnection,
    queue: Arc<RedisStreamQueue>,
    prefix: String,
    accepter: Accepter,
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
            accepter: Accepter::spawn(conn.clone(), pending_ttl.as_secs()),
            conn,
            db,
            queue,
            prefix: prefix.to_owned(),
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

    /// Runs the accept script; returns (number, version), with number 0
    /// when no counter is given. Checks the limits the API folded into
    /// this write (`ratelimit::folded`) in the same call, and keeps their
    /// verdict for it.
    async fn accept(
        &self,
        app_id: i64,
        counter: Option<Counter>,
        queue: QueueName,
        pending_key: &str,
        state_tail: &str,
        trace: Option<String>,
    ) -> Result<(i64, i64)> {
        let counter_key = counter
            .as_ref()
            .map(|c| self.counter_key(c))
            .unwrap_or_default();
        let seq_key = self.app_key(app_id, "version");
        let stream_key = self.queue.stream_key(queue);
        // The API folds at most two: the token's and the address's.
        let limits = folded::limits();
        let limit_keys: Vec<_> = limits
            .iter()
            .take(LIMITS_PER_ACCEPT)
            .map(|l| {
                (
                    ratelimit::redis_key(&self.prefix, l),
                    l.cost_us(),
                    l.period_us(),
                )
            })
            .collect();
        for _ in 0..3 {
            let accepted = self
                .accepter
                .accept(Accept {
                    counter_key: counter_key.clone(),
                    seq_key: seq_key.clone(),
                    stream_key: stream_key.clone(),
                    pending_key: pending_key.to_owned(),
                    state_tail: state_tail.to_owned(),
                    trace: trace.clone(),
                    limits: limit_keys.clone(),
                })
                .await?;
            let n = accepted.number;
            if n != -1 && !limit_keys.is_empty() {
                let checked = &limits[..limit_keys.len()];
                let tats = &accepted.tats[..limit_keys.len()];
                folded::record(ratelimit::verdict(
                    checked,
                    tats,
                    accepted.now,
                    accepted.wait,
                ));
            }
            if n == -2 {
                return Err(StoreError::RateLimited);
            }
            if n >= 0 {
                return Ok((n, accepted.version));
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

    fn pending_key(&self, app_id: i64, scope: &str) -> String {
        self.app_key(app_id, &format!("pending:{scope}"))
    }

    async fn recall<T: serde::de::DeserializeOwned>(
        &self,
        app_id: i64,
        scope: &str,
    ) -> Result<Option<T>> {
        let mut conn = self.conn.clone();
        let state: Option<String> = match redis::cmd("GET")
            .arg(self.pending_key(app_id, scope))
            .query_async(&mut conn)
            .await
        {
            // Before one-script accepts, a pending entry was a hash. Such
            // an entry, left by an older version for up to its TTL, is not
            // read: its row reaches the database within a batch anyway.
            Err(e) if e.code() == Some("WRONGTYPE") => None,
            other => other?,
        };
        Ok(match state {
            Some(s) => Some(serde_json::from_str(&s)?),
            None => None,
        })
    }
}

#[async_trait]
impl Intake for RedisIntake {
    async fn create_chat(
        &self,
        app_id: i64,
        name: Option<String>,
        trace: Option<String>,
    ) -> Result<ChatRow> {
        let now = crate::now();
        let tail = json_tail(&ChatState {
            application_id: app_id,
            number: None,
            name: name.as_deref(),
            created_at: now,
            updated_at: now,
        })?;
        // The script appends the number it reserves.
        let pending = self.pending_key(app_id, &chat_scope_prefix(app_id));
        let (number, version) = self
            .accept(
                app_id,
                Some(Counter::Chats(app_id)),
                QueueName::Chats,
                &pending,
                &tail,
                trace,
            )
            .await?;
        Ok(ChatRow {
            application_id: app_id,
            number,
            name,
            version,
            created_at: now,
            updated_at: now,
        })
    }

    async fn update_chat(
        &self,
        current: &ChatRow,
        name: Option<String>,
        trace: Option<String>,
    ) -> Result<ChatRow> {
        let app_id = current.application_id;
        let now = crate::now();
        let tail = json_tail(&ChatState {
            application_id: app_id,
            number: Some(current.number),
            name: name.as_deref(),
            created_at: current.created_at,
            updated_at: now,
        })?;
        let pending = self.pending_key(app_id, &chat_scope(app_id, current.number));
        let (_, version) = self
            .accept(app_id, None, QueueName::Chats, &pending, &tail, trace)
            .await?;
        Ok(ChatRow {
            name,
            version,
            updated_at: now,
            ..current.clone()
        })
    }

    async fn create_message(
        &self,
        app_id: i64,
        chat_number: i64,
        body: String,
        trace: Option<String>,
    ) -> Result<MessageRow> {
        let now = crate::now();
        let tail = json_tail(&MessageState {
            application_id: app_id,
            chat_number,
            number: None,
            body: &body,
            created_at: now,
            updated_at: now,
        })?;
        let pending = self.pending_key(app_id, &message_scope_prefix(app_id, chat_number));
        let (number, version) = self
            .accept(
                app_id,
                Some(Counter::Messages(app_id, chat_number)),
                QueueName::Messages,
                &pending,
                &tail,
                trace,
            )
            .await?;
        Ok(MessageRow {
            application_id: app_id,
            chat_number,
            number,
            body,
            version,
            created_at: now,
            updated_at: now,
        })
    }

    async fn update_message(
        &self,
        current: &MessageRow,
        body: String,
        trace: Option<String>,
    ) -> Result<MessageRow> {
        let app_id = current.application_id;
        let now = crate::now();
        let tail = json_tail(&MessageState {
            application_id: app_id,
            chat_number: current.chat_number,
            number: Some(current.number),
            body: &body,
            created_at: current.created_at,
            updated_at: now,
        })?;
        let scope = message_scope(app_id, current.chat_number, current.number);
        let pending = self.pending_key(app_id, &scope);
        let (_, version) = self
            .accept(app_id, None, QueueName::Messages, &pending, &tail, trace)
            .await?;
        Ok(MessageRow {
            body,
            version,
            updated_at: now,
            ..current.clone()
        })
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

    fn folds_rate_limits(&self) -> bool {
        true
    }
}
