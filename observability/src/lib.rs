//! Process-wide telemetry: the tracing subscriber every role installs, and
//! the Prometheus metrics every role records into ([`metrics`]).
//!
//! Owns log formatting (text, or JSON with `LOG_FORMAT=json`) and
//! filtering (`RUST_LOG`), and metric names, units and buckets. OpenTelemetry export to
//! Jaeger arrives with the observability issue. It must not know about any
//! domain type: other crates only emit `tracing` spans and events.
pub mod metrics;

use tracing_subscriber::EnvFilter;

/// How log lines are written to standard output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: one line per event, with its span's fields.
    #[default]
    Text,
    /// For log collectors: one JSON object per line, with the event's
    /// fields at the top level and the current span's fields under `span`.
    Json,
}

/// Installs the global subscriber, filtered by `RUST_LOG` (or
/// `default_filter`). Safe to call more than once: later calls are
/// ignored, which keeps tests that build several apps in one process from
/// panicking.
pub fn init(default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = match format {
        // Colour codes only for a terminal: in files and log collectors
        // they are noise around every field.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
