//! The job queue on Redis Streams.
//!
//! Keys, all sharing the queue's hash tag so every script runs in one slot:
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

use redis::{
    Client,
    aio::{ConnectionManager, MultiplexedConnection},
};

use crate::QueueName;
use chat_links::{error::Result, redis_link};

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
    pub(super) client: Client,
    conn: ConnectionManager,
    prefix: String,
    claim_idle: Duration,
    done_cap: usize,
    /// Consumers that own nothing and have been idle this long are removed
    /// from the group, so names from past processes do not pile up.
    prune_idle: Duration,
    last_prune: Mutex<HashMap<QueueName, Instant>>,
    scripts: Scripts,
    /// One connection per consumer: a blocking XREADGROUP holds its
    /// connection, and sharing it would stall every other command.
    readers: Mutex<HashMap<String, MultiplexedConnection>>,
    last_sweep: Mutex<HashMap<(QueueName, String), Instant>>,
    groups: Mutex<HashMap<QueueName, bool>>,
}

impl RedisStreamQueue {
    pub async fn connect(url: &str, prefix: &str, claim_idle: Duration) -> Result<Arc<Self>> {
        let client = redis_link::client(url)?;
        let conn = redis_link::manager(&client).await?;
        Ok(Arc::new(Self {
            client,
            conn,
            prefix: prefix.to_owned(),
            claim_idle,
            done_cap: 10_000,
            prune_idle: Duration::from_secs(600),
            last_prune: Mutex::new(HashMap::new()),
            scripts: Scripts::load(),
            readers: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
        }))
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
        format!("{}{{q:{}}}:{part}", self.prefix, q.as_str())
    }

    pub fn stream_key(&self, q: QueueName) -> String {
        self.key(q, "stream")
    }
}
