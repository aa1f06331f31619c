//! Reaching the backends: opening the relational database, connections to
//! Redis that heal by themselves, and what a backend's failure means.
//!
//! # Layout
//! - [`db`]: connecting to MySQL or SQLite and applying migrations.
//! - [`redis_conn`]: connections to one Redis node or to a Redis Cluster,
//!   which heal by themselves and follow the cluster's redirections.
//! - [`redis_link`]: what a Redis error says about whether a command ran,
//!   and sending again what did not.
//! - [`redis_durability`]: what Redis keeps across a crash; an eviction
//!   policy that could drop keys is refused.
//! - [`grouping`]: many callers' requests answered a group at a time, one
//!   round trip per group.
//! - [`error`]: [`StoreError`], the one failure type of every storage
//!   crate, and whether a failure is an outage or contention.
//! - [`now`] and [`now_millis`]: the clocks that stored times are read from.
//!
//! Every crate that stores something builds on this one. It must not know
//! what is stored: no tables but the migrations', no keys, no job types.
pub mod db;
pub mod error;
pub mod grouping;
pub mod redis_conn;
pub mod redis_durability;
pub mod redis_link;
mod time;

pub use error::{Result, StoreError};
pub use time::{now, now_micros, now_millis};
