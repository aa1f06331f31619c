//! The rate limiter of the distributed profile: each key's TAT in Redis,
//! all of a request's keys checked by one script against Redis's own
//! clock, so API processes on different hosts agree.
use async_trait::async_trait;
use redis::{Client, Script, aio::ConnectionManager};

use super::{Limit, RateLimiter, Verdict, verdict};
use crate::error::Result;

/// KEYS: the limits' keys. ARGV: each key's cost and period in µs. Admits
/// the request only if every key admits it; then stores each new TAT with
/// an expiry at that TAT (a passed TAT is the same as none). Returns the
/// wait (0 when admitted), the time it used, and each key's TAT as it now
/// stands. µs values stay below 2^53, so Lua's doubles hold them exactly.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
local stored = {}
local nexts = {}
for i = 1, #KEYS do
  local cost = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  stored[i] = tat
  if tat < now then tat = now end
  nexts[i] = tat + cost
  local w = nexts[i] - period - now
  if w > wait then wait = w end
end
local out = {wait, now}
for i = 1, #KEYS do
  if wait == 0 then
    local ttl = math.ceil((nexts[i] - now) / 1000)
    redis.call('SET', KEYS[i], string.format('%.0f', nexts[i]), 'PX', ttl)
    out[#out + 1] = nexts[i]
  else
    out[#out + 1] = stored[i]
  end
end
return out
"#;

pub struct RedisRateLimiter {
    conn: ConnectionManager,
    prefix: String,
    script: Script,
}

impl RedisRateLimiter {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let client = Client::open(url)?;
        Ok(Self {
            conn: crate::queue::redis_connection_manager(&client).await?,
            prefix: prefix.to_owned(),
            script: Script::new(GCRA),
        })
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, limits: &[Limit]) -> Result<Verdict> {
        let mut call = self.script.prepare_invoke();
        for l in limits {
            call.key(format!("{}rl:{}", self.prefix, l.key));
        }
        for l in limits {
            call.arg(l.cost_us()).arg(l.period_us());
        }
        let mut conn = self.conn.clone();
        let out: Vec<i64> = call.invoke_async(&mut conn).await?;
        let (wait, now) = (out[0], out[1]);
        Ok(verdict(limits, &out[2..], now, wait))
    }
}
