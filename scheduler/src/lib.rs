//! Periodic work: recomputing `chats_count` and `messages_count`, and
//! purging expired read-your-writes entries.
//!
//! Owns when the counts are recomputed; the SQL that recomputes them lives
//! in `chat-store`. It must not know about HTTP or the job queues. Today it
//! is a plain interval per process; the scheduler issue moves it onto
//! apalis-cron with one firing per tick across replicas.
use std::time::Duration;

use chat_store::{Backends, repo};
use tokio::sync::watch;

/// Recounts every `interval` until `shutdown` turns true.
pub async fn run(backends: Backends, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let started = std::time::Instant::now();
        match repo::counts::recount_all(&backends.writer).await {
            Ok(()) => tracing::info!(elapsed = ?started.elapsed(), "counts recomputed"),
            Err(e) => tracing::warn!(error = %e, "recount failed"),
        }
        match backends.intake.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "expired pending entries purged"),
            Err(e) => tracing::warn!(error = %e, "purging pending entries failed"),
        }
    }
}
