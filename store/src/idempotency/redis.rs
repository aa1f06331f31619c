//! Idempotency records in Redis: one hash per key, among its application's
//! keys (`crate::homes`: `<app keys>:idem:<digest>`), so the accept script
//! that writes a chat or message can record the accepted state in it
//! atomically.
//!
//! Fields: `f` fingerprint, `o` owner of the current run, `l` its lease's
//! end (ms), `a` the accepted state a write left, `t` a planned token,
//! `s`/`h`/`b` the stored response's status, headers (JSON) and body. A
//! completed record holds only `f`, `s`, `h` and `b`. The hash expires with
//! the retention; nothing else removes it.
use std::time::Duration;

use async_trait::async_trait;
use std::sync::Arc;

use redis::Script;

use super::{Begin, IdempotencyStore, Key, Link, Scope, Stored, new_owner};
use crate::homes::{AppKeys, Homes};
use chat_links::{
    error::{Result, StoreError},
    redis_link::{self, RedisConn},
};

/// KEYS: the record. ARGV: fingerprint, owner, now (ms), lease (ms),
/// retention (s). Returns `{'run'}`, `{'busy'}`, `{'mismatch'}` or
/// `{'done', status, headers, body}`.
const BEGIN: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'f', 'l', 's', 'h', 'b')
local now, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
if not r[1] then
  redis.call('HSET', KEYS[1], 'f', ARGV[1], 'o', ARGV[2], 'l', string.format('%d', now + lease))
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return {'run'}
end
if r[1] ~= ARGV[1] then return {'mismatch'} end
if r[3] then return {'done', r[3], r[4], r[5]} end
if tonumber(r[2] or '0') > now then return {'busy'} end
redis.call('HSET', KEYS[1], 'o', ARGV[2], 'l', string.format('%d', now + lease))
return {'run'}
"#;

/// KEYS: the record. ARGV: owner, status, headers, body. Only the run that
/// holds the record may complete it. A completed record keeps only what a
/// replay reads: it lives for the whole retention, one per keyed write, so
/// the run's fields (a third of it) would be most of Redis's memory.
const COMPLETE: &str = r#"
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'o', 'l', 'a', 't')
redis.call('HSET', KEYS[1], 's', ARGV[2], 'h', ARGV[3], 'b', ARGV[4])
return 1
"#;

/// KEYS: the record. ARGV: owner.
const RELEASE: &str = r#"
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'l', '0')
return 1
"#;

/// KEYS: the record. ARGV: proposal. The first proposal stays.
const PLAN: &str = r#"
redis.call('HSETNX', KEYS[1], 't', ARGV[1])
return redis.call('HGET', KEYS[1], 't')
"#;

/// How long a call waits for a Redis that refuses it (restarting).
const NOT_RUN_WAIT: Duration = Duration::from_secs(5);

/// The Redis key of a record of [`Scope::Application`], among the keys of
/// its application (`app`): one script can touch it with the application's
/// counters and pending entries.
pub(crate) fn record_key(app: &AppKeys, key: &Key) -> String {
    app.key(&format!("idem:{}", key.digest))
}

pub struct RedisIdempotency {
    conn: RedisConn,
    prefix: String,
    homes: Arc<Homes>,
    retention: Duration,
    begin: Script,
    complete: Script,
    release: Script,
    plan: Script,
}

impl RedisIdempotency {
    pub fn new(conn: RedisConn, prefix: &str, homes: Arc<Homes>, retention: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            homes,
            retention,
            begin: Script::new(BEGIN),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
            plan: Script::new(PLAN),
        }
    }

    async fn record(&self, key: &Key) -> Result<String> {
        Ok(match key.scope {
            Scope::Application(id) => record_key(&self.homes.of(id).await?, key),
            Scope::Applications => {
                format!("{}idem:{}:{}", self.prefix, key.scope.label(), key.digest)
            }
        })
    }

    /// Runs `script` on the record until Redis runs it (a restart costs a
    /// wait, not an error).
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        key: &Key,
        args: &[&str],
    ) -> Result<T> {
        let mut invocation = script.key(self.record(key).await?);
        for arg in args {
            invocation.arg(*arg);
        }
        redis_link::until_run(NOT_RUN_WAIT, || {
            let mut conn = self.conn.clone();
            let invocation = &invocation;
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotency {
    async fn begin(&self, key: &Key, fingerprint: &str, lease: Duration) -> Result<Begin> {
        let owner = new_owner();
        let reply: Vec<redis::Value> = self
            .run(
                &self.begin,
                key,
                &[
                    fingerprint,
                    &owner,
                    &chat_links::now_millis().to_string(),
                    &lease.as_millis().to_string(),
                    &self.retention.as_secs().max(1).to_string(),
                ],
            )
            .await?;
        let text = |i: usize| -> Result<String> {
            match reply.get(i) {
                Some(v) => Ok(redis::from_redis_value_ref::<String>(v)
                    .map_err(|e| StoreError::Other(format!("idempotency record: {e}")))?),
                None => Err(StoreError::Other("idempotency record: short reply".into())),
            }
        };
        Ok(match text(0)?.as_str() {
            "run" => Begin::Run(Link {
                key: key.clone(),
                owner,
            }),
            "busy" => Begin::Busy,
            "mismatch" => Begin::Mismatch,
            "done" => {
                let body = match reply.get(3) {
                    Some(redis::Value::BulkString(b)) => b.clone(),
                    _ => Vec::new(),
                };
                Begin::Replay(Stored {
                    status: text(1)?.parse().unwrap_or(500),
                    headers: serde_json::from_str(&text(2)?)?,
                    body,
                })
            }
            other => {
                return Err(StoreError::Other(format!(
                    "idempotency record: unexpected {other}"
                )));
            }
        })
    }

    async fn complete(&self, link: &Link, response: &Stored) -> Result<()> {
        let headers = serde_json::to_string(&response.headers)?;
        let mut invocation = self.complete.key(self.record(&link.key).await?);
        invocation
            .arg(&link.owner)
            .arg(response.status)
            .arg(headers)
            .arg(&response.body[..]);
        let _: i64 = redis_link::until_run(NOT_RUN_WAIT, || {
            let mut conn = self.conn.clone();
            let invocation = &invocation;
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await?;
        Ok(())
    }

    async fn release(&self, link: &Link) -> Result<()> {
        let _: i64 = self.run(&self.release, &link.key, &[&link.owner]).await?;
        Ok(())
    }

    async fn plan(&self, link: &Link, proposal: &str) -> Result<String> {
        self.run(&self.plan, &link.key, &[proposal]).await
    }
}
