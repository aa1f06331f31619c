//! Fault scenarios against the real `chat` binary on the distributed profile.
//!
//! [`run`] starts private servers (Redis with an AOF, MariaDB, the osmem-server
//! search emulator) and the `chat` roles on free loopback ports, drives
//! writes through the public API while a [`Timeline`] of faults kills,
//! freezes and restarts those servers and the workers, and then checks what
//! the clients were told against what the API lists and what the search
//! index holds. It returns a [`Report`]; [`Report::failures`] names every
//! violated property.
//!
//! This crate owns the servers and processes it starts (and kills all of
//! them when [`run`] returns or unwinds), the client's retry discipline,
//! and the exactly-once comparison. It must not know the system's
//! internals: no chat-* crate, no Redis key, no SQL table. It sees the
//! system only as an operator and a client would: the documented
//! environment variables, the HTTP API, `/metrics`, and the search
//! backend's own REST API.
//!
//! [`cluster::Cluster`] is a private Redis Cluster on loopback, for the
//! tests of the cluster deployment (the end-to-end tests and the queue's
//! contract), which start one each.

mod check;
mod client;
pub mod cluster;
mod config;
mod flag;
mod inject;
mod load;
mod probe;
mod processes;
mod record;
mod report;
mod roles;
mod scenario;
mod servers;
mod timeline;

pub use config::Config;
pub use report::{FaultRow, RedisStats, Report};
pub use scenario::run;
pub use servers::Search;
pub use timeline::Timeline;

/// Whether this machine has the servers a scenario starts; `Err` names
/// what is missing, so a test can say why it skipped.
pub fn available() -> Result<(), String> {
    let wanted: [(&str, &[&str]); 5] = [
        ("redis-server", &["redis-server"]),
        ("redis-cli", &["redis-cli"]),
        ("mariadbd", &["mariadbd"]),
        ("mariadb-install-db", &["mariadb-install-db"]),
        ("mysql client", &["mysql", "mariadb"]),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(_, names)| names.iter().all(|n| processes::find_program(n).is_none()))
        .map(|(what, _)| *what)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("not installed: {}", missing.join(", ")))
    }
}
