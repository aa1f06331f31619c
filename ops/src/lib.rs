//! What the system records about its own work, for operators: the
//! scheduler's run history, the workers' per-minute figures and registry,
//! the audit trail of operator actions, the queues operators paused and
//! the dashboard sessions they ended.
//!
//! # Layout
//! - [`runs`]: one record per scheduled task run, with repairs kept apart.
//! - [`pulse`]: per-minute job figures; the names workers write and the
//!   dashboard reads are the types [`pulse::Field`], [`pulse::Histogram`]
//!   and [`pulse::LagStage`].
//! - [`workers`]: the registry of worker processes and their heartbeats.
//! - [`audit`]: who did what to which job, and when.
//! - [`pauses`]: operator pauses of a queue, which every worker obeys.
//! - [`sessions`]: dashboard sessions revoked by a logout.
//!
//! It must not know about the client-visible tables, the queue's
//! backends, HTTP or apalis: it stores records and reads them back.
pub mod audit;
pub mod pauses;
pub mod pulse;
pub mod runs;
pub mod sessions;
pub mod workers;
