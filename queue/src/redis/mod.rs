//! The job queue on Redis Streams.
//!
//! On one node, a queue's keys share the queue's hash tag (`{q:<name>}`,
//! as below). On a Redis Cluster the queue is sharded: shard `k` of every
//! queue lives under the tag `{s<k>}` ([`shard_tag`]), the tag its
//! applications' keys also live under, so the intake's accept script
//! can enqueue beside the numbers it reserves, in one slot. Each shard is
//! a whole queue of its own; [`crate::ShardedQueue`] makes them one.
//!
//! Keys, all sharing one hash tag so every script runs in one slot:
//! - `<prefix>{q:<name>}:stream`: entries `p` (payload), `a` (attempt),
//!   `f` (failures, JSON), `t` (the sender's `traceparent`, when traced);
//!   consumer group `workers`;
//! - `<prefix>{q:<name>}:retry`: ZSET of failed jobs scored by due time;
//! - `<prefix>{q:<name>}:dead`: buried jobs, capped by `MAXLEN ~`;
//! - `<prefix>{q:<name>}:done`: a copy of each acked job (payload cut to
//!   [`DONE_PAYLOAD_MAX`] bytes), capped by `MAXLEN ~`.
//!
//! Acked entries are deleted from the stream, so its length is the live
//! backlog and memory does not grow with history. The done and dead
//! streams are history: their entry ids are the times the jobs settled,
//! so [`JobHistory::trim`] drops what is older than the retention with one
//! `XTRIM MINID` each, and the number of keys per queue stays four. Reads are bounded by
//! `COUNT`, and retries are promoted in bounded chunks, so no call ever
//! unpacks an unbounded list (the apalis-redis 1.0.0 backlog poison).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::QueueName;
use chat_links::{
    error::Result,
    redis_link::{self, Link, RedisConn},
};

mod claims;
mod history;
mod protocol;
mod scripts;
mod wire;

pub use wire::enqueue_lua;

use scripts::Scripts;

const GROUP: &str = "workers";
/// How many due retries one promotion call moves back to the stream.
const PROMOTE_CHUNK: usize = 256;
/// Bytes of payload a done record keeps: enough for a message job, while a
/// large index batch cannot make the history's memory balloon.
pub const DONE_PAYLOAD_MAX: usize = 4096;

pub struct RedisStreamQueue {
    pub(super) client: Link,
    conn: RedisConn,
    prefix: String,
    /// The cluster shard this queue is, or `None` on one node.
    shard: Option<u16>,
    claim_idle: Duration,
    done_cap: usize,
    /// Consumers that own nothing and have been idle this long are removed
    /// from the group, so names from past processes do not pile up.
    prune_idle: Duration,
    last_prune: Mutex<HashMap<QueueName, Instant>>,
    scripts: Scripts,
    /// One connection per consumer: a blocking XREADGROUP holds its
    /// connection, and sharing it would stall every other command. The
    /// shards of a cluster's queue share them: a consumer reads one shard
    /// at a time, and each of these connections reaches every node.
    readers: Arc<Mutex<HashMap<String, RedisConn>>>,
    last_sweep: Mutex<HashMap<(QueueName, String), Instant>>,
    groups: Mutex<HashMap<QueueName, bool>>,
}

impl RedisStreamQueue {
    /// The queue on one Redis node; on a cluster, its shard 0, whose
    /// [`sibling`](RedisStreamQueue::sibling)s are the others.
    pub async fn connect(url: &str, prefix: &str, claim_idle: Duration) -> Result<Arc<Self>> {
        let client = redis_link::client(url)?;
        let conn = redis_link::manager(&client).await?;
        let shard = client.is_cluster().then_some(0);
        Ok(Arc::new(Self {
            client,
            conn,
            prefix: prefix.to_owned(),
            shard,
            claim_idle,
            done_cap: 10_000,
            prune_idle: Duration::from_secs(600),
            last_prune: Mutex::new(HashMap::new()),
            scripts: Scripts::load(),
            readers: Arc::new(Mutex::new(HashMap::new())),
            last_sweep: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
        }))
    }

    /// Shard `k` of the same cluster queue, with this one's connections
    /// and settings.
    pub fn sibling(&self, k: u16) -> Arc<Self> {
        Arc::new(Self {
            client: self.client.clone(),
            conn: self.conn.clone(),
            prefix: self.prefix.clone(),
            shard: Some(k),
            claim_idle: self.claim_idle,
            done_cap: self.done_cap,
            prune_idle: self.prune_idle,
            last_prune: Mutex::new(HashMap::new()),
            scripts: Scripts::load(),
            readers: self.readers.clone(),
            last_sweep: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
        })
    }

    /// Caps the done stream at about `cap` entries (default 10,000); 0
    /// keeps no done records.
    pub fn with_done_cap(mut self: Arc<Self>, cap: usize) -> Arc<Self> {
        Arc::get_mut(&mut self)
            .expect("set the cap before sharing")
            .done_cap = cap;
        self
    }

    /// Sets how long an empty consumer may stay idle before it is pruned.
    pub fn with_prune_idle(mut self: Arc<Self>, idle: Duration) -> Arc<Self> {
        Arc::get_mut(&mut self)
            .expect("set before sharing")
            .prune_idle = idle;
        self
    }

    fn key(&self, q: QueueName, part: &str) -> String {
        queue_key(&self.prefix, self.shard, q, part)
    }

    pub fn stream_key(&self, q: QueueName) -> String {
        self.key(q, "stream")
    }
}

/// The hash tag of cluster shard `k`, which its queues' keys and its
/// applications' keys all begin with.
pub fn shard_tag(prefix: &str, k: u16) -> String {
    format!("{prefix}{{s{k}}}")
}

/// A queue key: on one node under the queue's own tag, on a cluster under
/// its shard's.
fn queue_key(prefix: &str, shard: Option<u16>, q: QueueName, part: &str) -> String {
    match shard {
        None => format!("{prefix}{{q:{}}}:{part}", q.as_str()),
        Some(k) => format!("{}:q:{}:{part}", shard_tag(prefix, k), q.as_str()),
    }
}

/// Raises the cluster's recorded shard count to at least `count` and
/// returns it: the most shards any process was ever configured with, all
/// of which workers consume, since applications homed on a shard keep
/// writing there after the setting shrinks.
pub async fn record_shard_count(conn: &RedisConn, prefix: &str, count: u16) -> Result<u16> {
    let mut conn = conn.clone();
    let recorded: u16 = redis::Script::new(RAISE_SHARDS)
        .key(format!("{prefix}shards"))
        .arg(count)
        .invoke_async(&mut conn)
        .await?;
    Ok(recorded)
}

const RAISE_SHARDS: &str = r#"
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > now then
  now = tonumber(ARGV[1])
  redis.call('SET', KEYS[1], ARGV[1])
end
return now
"#;

/// The stream a job of `q` is appended to, on shard `shard` (`None` on
/// one node): what a script that enqueues by itself writes to.
pub fn stream_key(prefix: &str, shard: Option<u16>, q: QueueName) -> String {
    queue_key(prefix, shard, q, "stream")
}
