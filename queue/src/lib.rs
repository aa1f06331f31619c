//! The durable job log that sits between the API and the worker pools.
//!
//! Two traits split the contract by who uses it: [`JobQueue`], the worker
//! protocol of the intake and the worker pools, and [`JobHistory`], what
//! the dashboard, the probes and housekeeping read and repair. Every
//! `JobQueue` is a `JobHistory`.
//!
//! Two implementations share both, each a folder with its wire format,
//! its protocol and its history in separate files:
//! - [`RedisStreamQueue`]: a Redis stream per queue with a consumer group,
//!   a retry ZSET and a capped dead-letter stream;
//! - [`SqliteQueue`]: a `queue_jobs` table, leased by UPDATE … RETURNING, with
//!   the payloads kept apart in `queue_payloads`; a committed job wakes the
//!   claims waiting on its own queue in this process, and only those.
//!
//! On a Redis Cluster, [`ShardedQueue`] holds one `RedisStreamQueue` per
//! shard and routes each job to the shard that holds it.
//!
//! Settled jobs are kept for a while as history: done jobs up to a cap
//! and a retention, dead jobs for a longer retention; [`JobHistory::trim`]
//! enforces the retentions, and the scheduler's housekeeping calls it.
//!
//! The contract is at-least-once: a claimed job stays owned until it is
//! acked, retried or buried, and a claim that is never settled (its worker
//! died) is handed to another consumer after the lease (`claim_idle`)
//! runs out. Consumers must therefore be idempotent.
//!
//! This crate must not know what a job's payload holds: it stores opaque
//! strings. Below it is only `chat_links`.
mod history;
mod job;
mod listing;
mod protocol;
mod redis;
mod sharded;
mod sqlite;

pub use history::JobHistory;
pub use job::{Claimed, DeadJob, Failure, QueueStats, Retention, Trimmed};
pub use listing::{JobPage, JobRecord, JobSearch, JobState, Resource, contains_folded};
pub use protocol::JobQueue;
pub use redis::{
    DONE_PAYLOAD_MAX, RedisStreamQueue, enqueue_lua as redis_enqueue_lua, record_shard_count,
    shard_tag as redis_shard_tag, stream_key as redis_stream_key,
};
pub use sharded::{OpenShard, ShardedQueue};
pub use sqlite::SqliteQueue;

/// The queues this system runs. Each carries one job type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueName {
    Chats,
    Messages,
    /// Messages to (re)index for search, enqueued once their rows commit.
    Index,
}

impl QueueName {
    pub const ALL: [QueueName; 3] = [QueueName::Chats, QueueName::Messages, QueueName::Index];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Chats => "chats",
            QueueName::Messages => "messages",
            QueueName::Index => "index",
        }
    }

    /// Whether a job of this queue can hold the only copy of a write a
    /// client was told was accepted (a chat or message not yet in the
    /// database). Such a job is never dropped by a retention or a cap: once
    /// dead, it waits for an operator. An index job only repeats what the
    /// database already holds (the drift check repairs the index).
    pub fn holds_accepted_writes(self) -> bool {
        matches!(self, QueueName::Chats | QueueName::Messages)
    }
}
