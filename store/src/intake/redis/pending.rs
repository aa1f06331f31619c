//! The Redis intake's pending entries: the newest accepted state of a row
//! not yet persisted, read for read-your-writes and dropped once the row
//! is in the database.
use std::time::Duration;

use super::{READ_WAIT, RedisIntake};
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
    pub(super) fn pending_key(&self, app_id: i64, scope: &str) -> String {
        self.app_key(app_id, &format!("pending:{scope}"))
    }

    pub(super) async fn recall<T: serde::de::DeserializeOwned>(
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
    pub(super) async fn forget(&self, entries: Vec<(String, i64)>) -> Result<()> {
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
