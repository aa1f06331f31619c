//! The typed jobs and the worker pools that persist them.
//!
//! # Layout
//! - [`backend`]: an apalis `Backend` over `chat-queue`'s durable queue, so
//!   apalis drives our own Redis Streams or SQLite queue, with claims
//!   paced where batches linger long.
//! - [`settle`]: what happens after a handler returns: ack after the
//!   commit, hand back after an outage, or retry with exponential backoff
//!   and jitter, or bury.
//! - [`batcher`]: coalesces jobs into one version-ordered bulk upsert per
//!   batch (up to N jobs or T ms).
//! - [`persist`]: the two persistence jobs, `PersistChat` and
//!   `PersistMessage`, and their bulk writers.
//! - [`index`]: `IndexMessages`, which indexes a committed batch of
//!   messages for search, in bulk.
//! - [`outage`]: a gate per backend the workers write to, closed while it
//!   is down: nothing is claimed, and jobs are handed back unrun, at no
//!   cost in attempts.
//! - [`lease`]: renews the leases of the jobs a worker holds, so only a
//!   dead worker's jobs are taken over.
//! - [`paused`]: the queues operators paused, which workers do not claim
//!   from.
//! - [`pool`]: builds and supervises one apalis worker per queue.
//! - [`pulse`]: the per-minute figures and the heartbeats the dashboard
//!   reads, written to the database.
//! - `telemetry`: bulk-write sizes, durations and lags, for `/metrics`.
//! - [`trace`]: each job's `receive` span and each batch's `process`
//!   span, which continue the trace context the job carries.
//!
//! This crate must not know about HTTP or how numbers are reserved. It
//! reads jobs from the queue, writes rows to the database and indexes them
//! for search, through the [`WorkerDeps`] the binary hands it: `chat-queue`,
//! `chat-store`'s repositories and intake, and `chat-search`. Each queue it
//! works is a `pool::QueueSpec`, implemented by its job type.
pub mod backend;
pub mod batcher;
mod deps;
pub mod index;
pub mod lease;
pub mod outage;
pub mod paused;
pub mod persist;
pub mod pool;
pub mod pulse;
pub mod settle;
mod telemetry;
#[cfg(feature = "test-switches")]
mod test_switches;
pub mod trace;

pub use deps::WorkerDeps;
pub use pool::{WorkerConfig, run_pool};
