//! The client-visible data and the write intake: entities and their
//! repositories, numbering, read-your-writes entries, idempotency records
//! and request rate limits, on either profile.
//!
//! # Layout
//! - [`entity`]: sea-orm entities for the three tables clients see.
//! - [`model`]: the row states that travel from the API through the queue
//!   to the bulk writers, each stamped with its `version`.
//! - [`repo`]: reads, the version-ordered bulk upserts, the count marks
//!   and recounts, and the number ceilings.
//! - [`intake`]: accepting a chat or message write: reserve its number and
//!   version, record it for read-your-writes, enqueue its job (through
//!   `chat_queue`, whose wire format the Redis accept script writes); on
//!   SQLite a new message's row is written in the accept itself, with one
//!   index job per group.
//! - [`homes`]: where an application's Redis keys live: its own hash tag
//!   on one node, its home shard's on a cluster.
//! - [`idempotency`]: `Idempotency-Key` records, which the intake's
//!   writes fill in atomically with themselves.
//! - [`ratelimit`]: request rate limits (GCRA), shared through Redis or
//!   kept in memory; a write's limits can ride in its accept, and a read's
//!   in its pending read (`ratelimit::folded`).
//!
//! Below it: `chat_queue` (the job log) and `chat_links` (connections and
//! [`StoreError`]). This crate must not know about HTTP, apalis, the worker
//! pools or search: it exposes storage operations and nothing that decides
//! when to call them.
pub mod entity;
pub mod homes;
pub mod idempotency;
pub mod intake;
pub mod model;
pub mod ratelimit;
pub mod repo;

pub use chat_links::{StoreError, error};
