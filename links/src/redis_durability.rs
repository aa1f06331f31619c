//! What a Redis server keeps across a crash, and whether it may drop keys
//! on its own: read at every start and shown on the dashboard.
//!
//! Redis holds the queue of accepted writes not yet persisted, the number
//! counters, the pending read-your-writes entries, the rate limits and the
//! `Idempotency-Key` records. An eviction policy that may delete keys
//! (`allkeys-*`, or `volatile-*`, since pending entries, limits and
//! idempotency records carry a TTL) would silently drop some of them, so it
//! is refused. Running without persistence is allowed, with a warning that
//! says what a crash of Redis would lose.
use crate::redis_conn::RedisConn;
use serde::Serialize;

use crate::error::Result;

/// Reads the settings of the Redis a deployment runs on, as often as asked
/// (the dashboard shows them live: they can change at run time).
#[derive(Clone)]
pub struct Inspector {
    conn: RedisConn,
}

impl Inspector {
    pub fn new(conn: RedisConn) -> Self {
        Self { conn }
    }

    pub async fn durability(&self) -> Result<Durability> {
        Durability::read(&self.conn).await
    }
}

/// Redis's persistence and eviction settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Durability {
    /// `appendonly`: whether every write goes to the append-only file.
    pub aof: bool,
    /// `appendfsync` (`always`, `everysec`, `no`), when Redis says.
    pub fsync: Option<String>,
    /// `save`: the RDB snapshot schedule, empty when off.
    pub snapshots: Option<String>,
    /// `maxmemory-policy`.
    pub eviction: String,
}

impl Durability {
    /// Reads the settings with `CONFIG GET`, or from `INFO` where `CONFIG`
    /// is renamed away (managed services).
    pub async fn read(conn: &RedisConn) -> Result<Self> {
        let mut conn = conn.clone();
        let config: redis::RedisResult<Vec<(String, String)>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .arg("appendfsync")
            .arg("save")
            .arg("maxmemory-policy")
            .query_async(&mut conn)
            .await;
        if let Ok(pairs) = config
            && !pairs.is_empty()
        {
            let get = |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            return Ok(Self {
                aof: get("appendonly").as_deref() == Some("yes"),
                fsync: get("appendfsync"),
                snapshots: get("save"),
                eviction: get("maxmemory-policy").unwrap_or_else(|| "noeviction".into()),
            });
        }
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .arg("memory")
            .query_async(&mut conn)
            .await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.trim().to_owned())
        };
        Ok(Self {
            aof: field("aof_enabled").as_deref() == Some("1"),
            fsync: None,
            snapshots: None,
            eviction: field("maxmemory_policy").unwrap_or_else(|| "noeviction".into()),
        })
    }

    /// Why this Redis must not be used, if it must not.
    pub fn refusal(&self) -> Option<String> {
        let p = self.eviction.as_str();
        (p.starts_with("allkeys-") || p.starts_with("volatile-")).then(|| {
            format!(
                "Redis has maxmemory-policy {p}: once full it would evict keys, among them \
                 queued jobs (accepted writes not yet persisted), number counters, \
                 pending entries and Idempotency-Key records. Set it to noeviction \
                 (CONFIG SET maxmemory-policy noeviction, and in redis.conf): Redis \
                 then refuses writes when full, which the API answers with 503"
            )
        })
    }

    /// What a crash of Redis, or of its host, loses with these settings.
    pub fn what_a_crash_loses(&self) -> String {
        if !self.aof {
            let snapshots = self
                .snapshots
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(|s| format!(" (snapshots \"{s}\" keep an older copy)"))
                .unwrap_or_default();
            return format!(
                "Redis keeps no append-only file{snapshots}: a restart or crash of Redis loses \
                 every accepted write still queued (answered 201 or 200 but not yet in the \
                 database), pending read-your-writes entries, rate limits and Idempotency-Key \
                 records; numbering resumes above the database's ceilings, skipping numbers"
            );
        }
        match self.fsync.as_deref() {
            Some("always") => "Redis writes every change to its append-only file before \
                               answering: a crash of Redis or of its host loses nothing \
                               acknowledged"
                .into(),
            Some("everysec") | None => "Redis writes every change to its append-only file before \
                                        answering and syncs it to disk every second: a crash of \
                                        Redis loses nothing acknowledged; a crash of its host \
                                        (power, kernel) can lose the last second of accepted \
                                        writes, and numbering then skips ahead"
                .into(),
            Some(other) => format!(
                "Redis writes every change to its append-only file and leaves syncing to the \
                 kernel (appendfsync {other}): a crash of Redis loses nothing acknowledged; a \
                 crash of its host can lose the last ~30 s of accepted writes"
            ),
        }
    }

    /// Whether a crash of Redis alone loses acknowledged writes.
    pub fn loses_writes_on_restart(&self) -> bool {
        !self.aof
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(aof: bool, fsync: &str, eviction: &str) -> Durability {
        Durability {
            aof,
            fsync: Some(fsync.into()),
            snapshots: Some(String::new()),
            eviction: eviction.into(),
        }
    }

    #[test]
    fn eviction_that_can_drop_keys_is_refused() {
        assert!(with(true, "always", "allkeys-lru").refusal().is_some());
        assert!(with(true, "always", "volatile-ttl").refusal().is_some());
        assert!(with(true, "always", "noeviction").refusal().is_none());
    }

    #[test]
    fn the_warning_says_what_a_crash_loses() {
        let none = with(false, "everysec", "noeviction");
        assert!(none.loses_writes_on_restart());
        assert!(
            none.what_a_crash_loses()
                .contains("every accepted write still queued")
        );
        let always = with(true, "always", "noeviction");
        assert!(!always.loses_writes_on_restart());
        assert!(always.what_a_crash_loses().contains("loses nothing"));
        assert!(
            with(true, "everysec", "noeviction")
                .what_a_crash_loses()
                .contains("last second")
        );
    }
}
