//! Everything that persists state: the database, numbers, read-your-writes
//! entries and the durable job queue, on either profile.
//!
//! # Layout
//! - [`db`]: connecting to MySQL or SQLite and applying migrations.
//! - [`entity`]: sea-orm entities for the three tables clients see.
//! - [`model`]: the row states that travel from the API through the queue
//!   to the bulk writers, each stamped with its `version`.
//! - [`repo`]: reads, the version-ordered bulk upserts, the count marks
//!   and recounts, and the scheduler's run history.
//! - [`intake`]: accepting a chat or message write: reserve its number and
//!   version, record it for read-your-writes, enqueue its job.
//! - [`idempotency`]: `Idempotency-Key` records, which the intake's
//!   writes fill in atomically with themselves.
//! - [`queue`]: the durable job log (Redis Streams, or a SQLite table),
//!   with its bounded history of done and dead jobs. Each job carries its
//!   sender's trace context as an opaque string.
//! - [`ratelimit`]: request rate limits (GCRA), shared through Redis or
//!   kept in memory; a write's limits can ride in its accept
//!   (`ratelimit::folded`).
//! - [`search`]: message search on Elasticsearch or embedded tantivy, and
//!   keeping the index equal to the database.
//! - [`redis_link`]: connections to Redis that heal by themselves, and
//!   what a Redis error says about whether a command ran.
//! - [`redis_durability`]: what Redis keeps across a crash; an eviction
//!   policy that could drop keys is refused.
//! - [`backends`]: picks the profile from the configured URLs.
//!
//! This crate must not know about HTTP, apalis or the worker pools: it
//! exposes storage operations and nothing that decides when to call them.
pub mod backends;
pub mod db;
pub mod entity;
pub mod error;
pub mod idempotency;
pub mod intake;
pub mod model;
pub mod queue;
pub mod ratelimit;
pub mod redis_durability;
pub mod redis_link;
pub mod repo;
pub mod search;
mod time;

pub use backends::{Backends, BackendsConfig, Profile};
pub use error::StoreError;
pub use time::{now, now_millis};
