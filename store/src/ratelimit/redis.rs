//! The rate limiter of the distributed profile: each key's TAT in Redis,
//! checked by a script against Redis's own clock, so API processes on
//! different hosts agree. On one node all of a request's keys are checked
//! by one script, atomically. On a cluster each key is on its own slot, so
//! each is checked by its own call, in turn, stopping at the first that
//! refuses: a key admitted before another refused has been charged, which
//! costs the client at most one request's worth of that key.
use async_trait::async_trait;
use redis::Script;

use super::{Limit, RateLimiter, Verdict, verdict};
use chat_links::{error::Result, redis_link::RedisConn};

/// GCRA over a request's keys at `now` (µs, from Redis's `TIME`):
/// `keys`, and each key's cost and period in µs. Admits the request only
/// if every key admits it; then stores each new TAT with an expiry at that
/// TAT (a passed TAT is the same as none). Returns the wait (0 when
/// admitted) and each key's TAT as it now stands. µs values stay below
/// 2^53, so Lua's doubles hold them exactly. The accept script calls it
/// too, to fold a write's check into the accept (`folded`).
pub(crate) const GCRA_LUA: &str = r#"
local function gcra(now, keys, costs, periods)
  local wait, stored, nexts = 0, {}, {}
  for i = 1, #keys do
    local tat = tonumber(redis.call('GET', keys[i]) or '0')
    stored[i] = tat
    if tat < now then tat = now end
    nexts[i] = tat + costs[i]
    local w = nexts[i] - periods[i] - now
    if w > wait then wait = w end
  end
  if wait > 0 then return wait, stored end
  for i = 1, #keys do
    local ttl = math.ceil((nexts[i] - now) / 1000)
    redis.call('SET', keys[i], string.format('%.0f', nexts[i]), 'PX', ttl)
  end
  return 0, nexts
end
"#;

/// KEYS: the limits' keys. ARGV: each key's cost and period in µs.
/// Returns the wait, the time it used, and each key's TAT.
const CHECK: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local costs, periods = {}, {}
for i = 1, #KEYS do
  costs[i] = tonumber(ARGV[2 * i - 1])
  periods[i] = tonumber(ARGV[2 * i])
end
local wait, tats = gcra(now, KEYS, costs, periods)
local out = {wait, now}
for i = 1, #tats do out[#out + 1] = tats[i] end
return out
"#;

/// A limit's Redis key.
pub(crate) fn key(prefix: &str, limit: &Limit) -> String {
    format!("{prefix}rl:{}", limit.key)
}

pub struct RedisRateLimiter {
    conn: RedisConn,
    prefix: String,
    script: Script,
    cluster: bool,
}

impl RedisRateLimiter {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let client = chat_links::redis_link::client(url)?;
        Ok(Self {
            conn: chat_links::redis_link::manager(&client).await?,
            prefix: prefix.to_owned(),
            script: Script::new(&format!("{GCRA_LUA}{CHECK}")),
            cluster: client.is_cluster(),
        })
    }

    /// Checks `limits` in one call: the wait, the time used, and each
    /// key's TAT.
    async fn check_together(&self, limits: &[Limit]) -> Result<(i64, i64, Vec<i64>)> {
        let mut call = self.script.prepare_invoke();
        for l in limits {
            call.key(key(&self.prefix, l));
        }
        for l in limits {
            call.arg(l.cost_us()).arg(l.period_us());
        }
        let mut conn = self.conn.clone();
        let out: Vec<i64> = call.invoke_async(&mut conn).await?;
        Ok((out[0], out[1], out[2..].to_vec()))
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, limits: &[Limit]) -> Result<Verdict> {
        if !self.cluster {
            let (wait, now, tats) = self.check_together(limits).await?;
            return Ok(verdict(limits, &tats, now, wait));
        }
        let (mut wait, mut now, mut tats) = (0, 0, Vec::with_capacity(limits.len()));
        for (i, limit) in limits.iter().enumerate() {
            let (w, n, t) = self.check_together(std::slice::from_ref(limit)).await?;
            (wait, now) = (w, n);
            tats.extend(t);
            if wait > 0 {
                return Ok(verdict(&limits[..=i], &tats, now, wait));
            }
        }
        Ok(verdict(limits, &tats, now, wait))
    }
}
