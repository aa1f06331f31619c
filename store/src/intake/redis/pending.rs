//! The Redis intake's pending entries: the newest accepted state of a row
//! not yet persisted, read for read-your-writes and dropped once the row
//! is in the database.
use std::time::Duration;

use super::{READ_WAIT, RedisIntake};
use crate::{
    homes::{AppKeys, Layout},
    intake::Intake,
    ratelimit::{self, folded::Folded},
};
use chat_links::{
    error::{Result, StoreError},
    redis_link,
};

/// How long a worker keeps trying to remove the pending entries of rows it
/// persisted, within its write's timeout; past it they expire on their own.
const FORGET_WAIT: Duration = Duration::from_secs(2);

/// Deletes each pending entry KEYS[i] whose version is at most ARGV[i]: a
/// newer state accepted meanwhile stays readable. Every state starts with
/// its number and version, before any text a client sent.
pub(super) const FORGET: &str = r#"
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

/// A read's rate limits and its pending entry in one call. KEYS: the
/// limits' keys, then the entry's. ARGV: each limit's cost and period in
/// µs. Returns the wait (0 when admitted), the time used, the entry (empty
/// when there is none, or when refused, since then nothing is read) and
/// each limit key's TAT. `gcra` is `ratelimit`'s.
pub(super) const RECALL: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limits, costs, periods = {}, {}, {}
for i = 1, #KEYS - 1 do
  limits[i] = KEYS[i]
  costs[i] = tonumber(ARGV[2 * i - 1])
  periods[i] = tonumber(ARGV[2 * i])
end
local wait, tats = gcra(now, limits, costs, periods)
local state = ''
if wait == 0 then
  -- pcall: an entry of an older version's type reads as none.
  local s = redis.pcall('GET', KEYS[#KEYS])
  if type(s) == 'string' then state = s end
end
return {wait, now, state, tats}
"#;

impl RedisIntake {
    pub(super) fn pending_key(&self, keys: &AppKeys, scope: &str) -> String {
        keys.key(&format!("pending:{scope}"))
    }

    /// The pending entry of `scope`, with `limits` checked first in the
    /// same call when this intake folds them.
    pub(super) async fn recall<T: serde::de::DeserializeOwned>(
        &self,
        app_id: i64,
        scope: &str,
        limits: Option<&Folded>,
    ) -> Result<Option<T>> {
        let key = self.pending_key(&self.keys(app_id).await?, scope);
        match limits {
            Some(limits) if !limits.limits().is_empty() && self.folds_rate_limits() => {
                self.recall_limited(key, limits).await
            }
            _ => self.recall_alone(key).await,
        }
    }

    async fn recall_limited<T: serde::de::DeserializeOwned>(
        &self,
        key: String,
        folded: &Folded,
    ) -> Result<Option<T>> {
        let limits = folded.limits();
        let read = redis_link::until_run(READ_WAIT, || {
            let mut call = self.recall.prepare_invoke();
            for l in limits {
                call.key(ratelimit::redis_key(&self.prefix, l));
            }
            call.key(&key);
            for l in limits {
                call.arg(l.cost_us()).arg(l.period_us());
            }
            let mut conn = self.conn.clone();
            async move { call.invoke_async(&mut conn).await }
        });
        let (wait, now, state, tats): (i64, i64, String, Vec<i64>) = read.await?;
        folded.record(ratelimit::verdict(limits, &tats, now, wait));
        if wait > 0 {
            return Err(StoreError::RateLimited);
        }
        Ok(match state.as_str() {
            "" => None,
            s => Some(serde_json::from_str(s)?),
        })
    }

    async fn recall_alone<T: serde::de::DeserializeOwned>(&self, key: String) -> Result<Option<T>> {
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
    pub(super) async fn forget(&self, entries: Vec<(String, i64)>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // A script's keys must share a slot on a cluster: one call per
        // shard there; on one node, one per 500 entries.
        let groups = match self.homes.layout() {
            Layout::Node => vec![entries],
            Layout::Cluster { .. } => by_hash_tag(entries),
        };
        for chunk in groups.iter().flat_map(|g| g.chunks(500)) {
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

/// Entries grouped by their key's hash tag (the text between the first
/// `{` and the next `}`), in first-seen order.
fn by_hash_tag(entries: Vec<(String, i64)>) -> Vec<Vec<(String, i64)>> {
    let mut groups: Vec<(String, Vec<(String, i64)>)> = Vec::new();
    for entry in entries {
        let tag = entry
            .0
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map_or("", |(tag, _)| tag)
            .to_owned();
        match groups.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, group)) => group.push(entry),
            None => groups.push((tag, vec![entry])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

#[cfg(test)]
mod tests {
    use super::by_hash_tag;

    #[test]
    fn entries_are_grouped_by_the_slot_their_tag_names() {
        let e = |k: &str| (k.to_owned(), 1);
        let groups = by_hash_tag(vec![e("p{s1}:a"), e("p{s2}:b"), e("p{s1}:c")]);
        assert_eq!(
            groups,
            vec![vec![e("p{s1}:a"), e("p{s1}:c")], vec![e("p{s2}:b")]]
        );
    }
}
