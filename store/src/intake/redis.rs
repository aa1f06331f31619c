//! The intake on Redis: numbers, versions and pending entries live under the
//! application's hash tag (`<prefix>{app:<id>}:…`). Every write is accepted
//! by one atomic script, in one round trip shared with concurrent writes
//! (see `redis_accept`).
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::{Script, aio::ConnectionManager};
use sea_orm::DatabaseConnection;
use serde::Serialize;

use super::{
    Intake, WriteMeta, chat_scope, chat_scope_prefix, message_scope, message_scope_prefix,
    redis_accept::{Accept, Accepter, LIMITS_PER_ACCEPT},
};
use crate::{
    idempotency,
    model::{ChatRow, MessageRow},
    ratelimit::{self, folded},
    repo,
};
use chat_links::{
    error::{Result, StoreError},
    redis_link,
};
use chat_queue::{QueueName, RedisStreamQueue};

/// How long a read waits for a Redis that refuses it (restarting, loading
/// its data) before it fails.
const READ_WAIT: Duration = Duration::from_secs(5);

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
    forget: Script,
    /// Ceilings being raised ahead of need, so one raise runs per scope.
    raising: Arc<Mutex<HashSet<String>>>,
}

/// How far past `number` a counter's ceiling is raised: the number again,
/// between 32 and 4,096. A loss of Redis data skips at most this many
/// numbers, so a small chat skips few; a busy counter costs one database
/// write per 4,096 numbers; and since a ceiling is raised when half a step
/// is left, a counter can go on for at least half a step while the
/// database is down.
fn ceiling_step(number: i64) -> i64 {
    number.clamp(32, 4_096)
}

/// Longest a write waits for the database to raise its ceiling; past it,
/// the write is refused (nothing was written) instead of hanging on a
/// database that does not answer.
const CEILING_WAIT: Duration = Duration::from_secs(2);

/// How long a worker keeps trying to remove the pending entries of rows it
/// persisted, within its write's timeout; past it they expire on their own.
const FORGET_WAIT: Duration = Duration::from_secs(2);

/// Tries of one accept through seeding and ceiling raises.
const MAX_ACCEPT_TRIES: usize = 16;

/// Deletes each pending entry KEYS[i] whose version is at most ARGV[i]: a
/// newer state accepted meanwhile stays readable. Every state starts with
/// its number and version, before any text a client sent.
const FORGET: &str = r#"
local n = 0
for i = 1, #KEYS do
  local state = redis.call('GET', KEYS[i])
  if state then
    local v = tonumber(string.match(state, '"version":(%d+)'))
    if v and v <= tonumber(ARGV[i]) then
      redis.call('DEL', KEYS[i])
      n = n + 1
    end
  end
end
return n
"#;

enum Counter {
    Chats(i64),
    Messages(i64, i64),
}

impl Counter {
    fn ceiling_scope(&self) -> String {
        match self {
            Counter::Chats(app) => repo::ceilings::chats(*app),
            Counter::Messages(app, chat) => repo::ceilings::messages(*app, *chat),
        }
    }
}

/// What an accept left: a new state, or the state an earlier run under the
/// same idempotency record wrote.
enum Outcome {
    New { number: i64, version: i64 },
    Earlier(String),
}

impl RedisIntake {
    pub async fn connect(
        url: &str,
        prefix: &str,
        db: DatabaseConnection,
        queue: Arc<RedisStreamQueue>,
        pending_ttl: Duration,
    ) -> Result<Self> {
        let client = chat_links::redis_link::client(url)?;
        let conn = chat_links::redis_link::manager(&client).await?;
        Ok(Self {
            accepter: Accepter::spawn(conn.clone(), pending_ttl.as_secs()),
            conn,
            db,
            queue,
            prefix: prefix.to_owned(),
            forget: Script::new(FORGET),
            raising: Arc::new(Mutex::new(HashSet::new())),
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

    fn ceiling_key(&self, counter: &Counter) -> String {
        match counter {
            Counter::Chats(app) => self.app_key(*app, "ceil:chats"),
            Counter::Messages(app, chat) => self.app_key(*app, &format!("ceil:messages:{chat}")),
        }
    }

    /// Runs the accept script; a new state comes back with its number (0
    /// when no counter is given) and version. Checks the limits the API
    /// folded into this write (`ratelimit::folded`) in the same call, and
    /// keeps their verdict for it.
    async fn accept(
        &self,
        app_id: i64,
        counter: Option<Counter>,
        queue: QueueName,
        pending_key: &str,
        state_tail: &str,
        meta: WriteMeta,
    ) -> Result<Outcome> {
        let counter_key = counter
            .as_ref()
            .map(|c| self.counter_key(c))
            .unwrap_or_default();
        let ceiling_key = counter.as_ref().map(|c| self.ceiling_key(c));
        let idempotency_key = meta
            .idempotency
            .as_ref()
            .map(|link| idempotency::redis_record_key(&self.prefix, &link.key));
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
        // A create may find its counter missing (seeded once), or its
        // ceiling reached (raised, and under concurrent creates perhaps
        // reached again by the others before this one runs).
        for _ in 0..MAX_ACCEPT_TRIES {
            let accepted = self
                .accepter
                .accept(Accept {
                    counter_key: counter_key.clone(),
                    seq_key: seq_key.clone(),
                    stream_key: stream_key.clone(),
                    pending_key: pending_key.to_owned(),
                    state_tail: state_tail.to_owned(),
                    trace: meta.trace.clone(),
                    limits: limit_keys.clone(),
                    idempotency_key: idempotency_key.clone(),
                    ceiling_key: ceiling_key.clone(),
                })
                .await?;
            let n = accepted.number;
            if n != -1 && n != -3 && n != -4 && !limit_keys.is_empty() {
                let checked = &limits[..limit_keys.len()];
                let tats = &accepted.tats[..limit_keys.len()];
                folded::record(ratelimit::verdict(
                    checked,
                    tats,
                    accepted.now,
                    accepted.wait,
                ));
            }
            match n {
                -2 => return Err(StoreError::RateLimited),
                -3 => {
                    let key = idempotency_key.as_deref().expect("only a linked write");
                    return self.earlier(key).await.map(Outcome::Earlier);
                }
                n if n >= 0 => {
                    // A ceiling running low is raised in the background, so
                    // a busy counter never waits for the database.
                    if let Some(counter) = &counter
                        && accepted.room < ceiling_step(n) / 2
                    {
                        self.raise_ahead(counter, n);
                    }
                    return Ok(Outcome::New {
                        number: n,
                        version: accepted.version,
                    });
                }
                _ => {}
            }
            let counter = counter.as_ref().expect("only counters can be missing");
            if n == -1 {
                self.seed(counter, &counter_key).await?;
            } else {
                self.raise_ceiling(counter).await?;
            }
        }
        Err(StoreError::Unavailable(
            "the number counter could not be seeded, or its ceiling raised".into(),
        ))
    }

    /// The state an earlier run under this idempotency record accepted.
    async fn earlier(&self, record: &str) -> Result<String> {
        let state: Option<String> = redis_link::until_run(READ_WAIT, || {
            let mut conn = self.conn.clone();
            async move {
                redis::cmd("HGET")
                    .arg(record)
                    .arg("a")
                    .query_async(&mut conn)
                    .await
            }
        })
        .await?;
        // Completed records drop the state: this run lost its lease to
        // another that wrote and answered, and a resend gets that answer.
        state.ok_or_else(|| {
            StoreError::OutcomeUnknown(
                "another request under this Idempotency-Key completed the write".into(),
            )
        })
    }

    /// Seeds a missing counter above every number it may have handed out:
    /// the highest persisted number, or the ceiling, whichever is higher.
    /// `SET NX` lets exactly one of several racing API processes win.
    async fn seed(&self, counter: &Counter, key: &str) -> Result<()> {
        let persisted = match counter {
            Counter::Chats(app) => repo::chats::max_number(&self.db, *app).await?,
            Counter::Messages(app, chat) => {
                repo::messages::max_number(&self.db, *app, *chat).await?
            }
        };
        let ceiling = repo::ceilings::get(&self.db, &counter.ceiling_scope()).await?;
        let highest = persisted.max(ceiling);
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
                persisted,
                ceiling,
                "seeded a missing number counter from the database"
            );
        }
        Ok(())
    }

    /// Raises the counter's ceiling in the database a step past its
    /// current number, then lets Redis hand out numbers up to it. The
    /// database write comes first: Redis never goes past a ceiling the
    /// database does not hold.
    async fn raise_ceiling(&self, counter: &Counter) -> Result<()> {
        let mut conn = self.conn.clone();
        let current: Option<i64> = redis::cmd("GET")
            .arg(self.counter_key(counter))
            .query_async(&mut conn)
            .await?;
        let next = current.unwrap_or(0) + 1;
        let target = next + ceiling_step(next);
        let scope = counter.ceiling_scope();
        let raise = repo::ceilings::raise(&self.db, &scope, target);
        let ceiling = tokio::time::timeout(CEILING_WAIT, raise)
            .await
            .map_err(|_| {
                StoreError::Unavailable("the database did not record a number ceiling".into())
            })??;
        let _: i64 = Script::new(RAISE)
            .key(self.ceiling_key(counter))
            .arg(ceiling)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Raises a ceiling running low in the background, once per scope at a
    /// time.
    fn raise_ahead(&self, counter: &Counter, number: i64) {
        let scope = counter.ceiling_scope();
        if !self.raising.lock().unwrap().insert(scope.clone()) {
            return;
        }
        let (db, mut conn) = (self.db.clone(), self.conn.clone());
        let (raising, key) = (self.raising.clone(), self.ceiling_key(counter));
        tokio::spawn(async move {
            let raised = async {
                let target = number + ceiling_step(number);
                let ceiling = repo::ceilings::raise(&db, &scope, target).await?;
                let _: i64 = Script::new(RAISE)
                    .key(&key)
                    .arg(ceiling)
                    .invoke_async(&mut conn)
                    .await?;
                Ok::<_, StoreError>(())
            };
            if let Err(e) = raised.await {
                tracing::debug!(%scope, error = %e, "could not raise a number ceiling ahead of need");
            }
            raising.lock().unwrap().remove(&scope);
        });
    }

    fn pending_key(&self, app_id: i64, scope: &str) -> String {
        self.app_key(app_id, &format!("pending:{scope}"))
    }

    async fn recall<T: serde::de::DeserializeOwned>(
        &self,
        app_id: i64,
        scope: &str,
    ) -> Result<Option<T>> {
        let key = self.pending_key(app_id, scope);
        let read = redis_link::until_run(READ_WAIT, || {
            let mut conn = self.conn.clone();
            let key = key.clone();
            async move { redis::cmd("GET").arg(key).query_async(&mut conn).await }
        });
        let state: Option<String> = match read.await {
            // Before one-script accepts, a pending entry was a hash. Such
            // an entry, left by an older version for up to its TTL, is not
            // read: its row reaches the database within a batch anyway.
            Err(StoreError::Redis(e)) if e.code() == Some("WRONGTYPE") => None,
            other => other?,
        };
        Ok(match state {
            Some(s) => Some(serde_json::from_str(&s)?),
            None => None,
        })
    }

    /// Deletes the pending entries of persisted rows, each unless a newer
    /// state is pending.
    async fn forget(&self, entries: Vec<(String, i64)>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        for chunk in entries.chunks(500) {
            let mut call = self.forget.prepare_invoke();
            for (key, version) in chunk {
                call.key(key).arg(version);
            }
            // A cut connection would otherwise leave the batch's entries
            // to their TTL; the guarded delete can run twice.
            let _: i64 = redis_link::until_done_idempotent(FORGET_WAIT, || {
                let mut conn = self.conn.clone();
                let call = &call;
                async move { call.invoke_async(&mut conn).await }
            })
            .await?;
        }
        Ok(())
    }
}

/// Sets the ceiling key KEYS[1] to ARGV[1] unless it is already higher.
const RAISE: &str = r#"
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > now then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"#;

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
        let pending = self.pending_key(app_id, &chat_scope_prefix(app_id));
        let outcome = self
            .accept(
                app_id,
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
        let pending = self.pending_key(app_id, &chat_scope(app_id, current.number));
        let outcome = self
            .accept(app_id, None, QueueName::Chats, &pending, &tail, meta)
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
        let pending = self.pending_key(app_id, &message_scope_prefix(app_id, chat_number));
        let outcome = self
            .accept(
                app_id,
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
        let pending = self.pending_key(app_id, &scope);
        let outcome = self
            .accept(app_id, None, QueueName::Messages, &pending, &tail, meta)
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
        let entries = persisted
            .iter()
            .map(|r| {
                let scope = chat_scope(r.application_id, r.number);
                (self.pending_key(r.application_id, &scope), r.version)
            })
            .collect();
        self.forget(entries).await
    }

    async fn forget_messages(&self, persisted: &[MessageRow]) -> Result<()> {
        let entries = persisted
            .iter()
            .map(|r| {
                let scope = message_scope(r.application_id, r.chat_number, r.number);
                (self.pending_key(r.application_id, &scope), r.version)
            })
            .collect();
        self.forget(entries).await
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

#[cfg(test)]
mod tests {
    use super::ceiling_step;

    #[test]
    fn small_counters_skip_little_and_busy_ones_write_rarely() {
        assert_eq!(ceiling_step(1), 32);
        assert_eq!(ceiling_step(100), 100);
        assert_eq!(ceiling_step(1_000_000), 4_096);
    }
}
