//! The Redis intake's pending entries: the newest accepted state of a row
//! not yet persisted, read for read-your-writes and dropped once the row
//! is in the database.
use std::time::Duration;

use super::{READ_WAIT, RedisIntake};
use crate::homes::{AppKeys, Layout};
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

impl RedisIntake {
    pub(super) fn pending_key(&self, keys: &AppKeys, scope: &str) -> String {
        keys.key(&format!("pending:{scope}"))
    }

    pub(super) async fn recall<T: serde::de::DeserializeOwned>(
        &self,
        app_id: i64,
        scope: &str,
    ) -> Result<Option<T>> {
        let key = self.pending_key(&self.keys(app_id).await?, scope);
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
