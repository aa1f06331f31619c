//! The number counters of the Redis intake and their ceilings: a counter
//! missing from Redis is seeded from the database, and never hands out a
//! number past the ceiling the database records (see `repo::ceilings`).
use std::time::Duration;

use redis::Script;

use super::RedisIntake;
use crate::{homes::AppKeys, repo};
use chat_links::error::{Result, StoreError};

/// How far past `number` a counter's ceiling is raised: the number again,
/// between 32 and 4,096. A loss of Redis data skips at most this many
/// numbers, so a small chat skips few; a busy counter costs one database
/// write per 4,096 numbers; and since a ceiling is raised when half a step
/// is left, a counter can go on for at least half a step while the
/// database is down.
pub(super) fn ceiling_step(number: i64) -> i64 {
    number.clamp(32, 4_096)
}

/// Longest a write waits for the database to raise its ceiling; past it,
/// the write is refused (nothing was written) instead of hanging on a
/// database that does not answer.
const CEILING_WAIT: Duration = Duration::from_secs(2);

pub(super) enum Counter {
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

impl RedisIntake {
    pub(super) fn counter_key(&self, keys: &AppKeys, counter: &Counter) -> String {
        match counter {
            Counter::Chats(_) => keys.key("chats"),
            Counter::Messages(_, chat) => keys.key(&format!("messages:{chat}")),
        }
    }

    pub(super) fn ceiling_key(&self, keys: &AppKeys, counter: &Counter) -> String {
        match counter {
            Counter::Chats(_) => keys.key("ceil:chats"),
            Counter::Messages(_, chat) => keys.key(&format!("ceil:messages:{chat}")),
        }
    }

    /// Seeds a missing counter above every number it may have handed out:
    /// the highest persisted number, or the ceiling, whichever is higher.
    /// `SET NX` lets exactly one of several racing API processes win.
    pub(super) async fn seed(&self, counter: &Counter, key: &str) -> Result<()> {
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
    pub(super) async fn raise_ceiling(&self, keys: &AppKeys, counter: &Counter) -> Result<()> {
        let mut conn = self.conn.clone();
        let current: Option<i64> = redis::cmd("GET")
            .arg(self.counter_key(keys, counter))
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
            .key(self.ceiling_key(keys, counter))
            .arg(ceiling)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Raises a ceiling running low in the background, once per scope at a
    /// time.
    pub(super) fn raise_ahead(&self, keys: &AppKeys, counter: &Counter, number: i64) {
        let scope = counter.ceiling_scope();
        if !self.raising.lock().unwrap().insert(scope.clone()) {
            return;
        }
        let (db, mut conn) = (self.db.clone(), self.conn.clone());
        let (raising, key) = (self.raising.clone(), self.ceiling_key(keys, counter));
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
}

/// Sets the ceiling key KEYS[1] to ARGV[1] unless it is already higher.
const RAISE: &str = r#"
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > now then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"#;
