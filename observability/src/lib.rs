//! Process-wide telemetry: the tracing subscriber every role installs, and
//! the Prometheus metrics every role records into ([`metrics`]).
//!
//! Owns log formatting and filtering (`RUST_LOG`), and metric names, units
//! and buckets. OpenTelemetry export to
//! Jaeger arrives with the observability issue. It must not know about any
//! domain type: other crates only emit `tracing` spans and events.
pub mod metrics;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once: later calls
/// are ignored, which keeps tests that build several apps in one process
/// from panicking.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colour codes only for a terminal: in files and log collectors they
    // are noise around every field.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .try_init();
}
