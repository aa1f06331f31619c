//! Process-wide telemetry: the tracing subscriber every role installs, and
//! the Prometheus metrics every role records into ([`metrics`]).
//!
//! Owns log formatting (text, or JSON with `LOG_FORMAT=json`) and
//! filtering (`RUST_LOG`), metric names, units and buckets, OpenTelemetry
//! export over OTLP ([`otel`]; spans in OTLP/HTTP protobuf, the default,
//! are encoded and sent by our own exporter), and carrying trace context through jobs
//! as an opaque string ([`propagate`]), every span the system opens
//! ([`spans`]), and which backends this process
//! is waiting for ([`health`]). It must not know about any domain
//! type: other crates emit `tracing` spans and events, and never touch an
//! OpenTelemetry type.
mod export;
pub mod health;
mod log_ids;
pub mod metrics;
pub mod otel;
mod otlp_http;
mod otlp_wire;
pub mod propagate;
pub mod spans;

use tracing_subscriber::EnvFilter;

/// How log lines are written to standard output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: one line per event, with its span's fields.
    #[default]
    Text,
    /// For log collectors: one JSON object per line, with the event's
    /// fields at the top level and the current span's fields under `span`.
    /// Inside a traced span, both formats add `trace_id` and `span_id`.
    Json,
}

/// What [`init`] started; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued, waiting a few seconds at most.
    /// Blocking: call it off the async runtime's workers.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(std::time::Duration::from_secs(5))
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Installs the global subscriber, filtered by `RUST_LOG` (or
/// `default_filter`), with the OpenTelemetry layer when a collector is
/// configured (see [`otel`]). Safe to call more than once: later calls
/// are ignored, which keeps tests that build several apps in one process
/// from panicking.
pub fn init(default_filter: &str, format: LogFormat) -> Telemetry {
    use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer();
    let fmt = match format {
        // Colour codes only for a terminal: in files and log collectors
        // they are noise around every field.
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            fmt.with_ansi(ansi)
                .event_format(log_ids::WithTraceIds {
                    inner: tracing_subscriber::fmt::format()
                        .with_target(true)
                        .with_ansi(ansi),
                    json: false,
                })
                .boxed()
        }
        LogFormat::Json => fmt
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(log_ids::WithTraceIds {
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .with_target(true)
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
                json: true,
            })
            .boxed(),
    };
    let provider = otel::provider();
    // Each layer filters for itself: RUST_LOG decides what is logged, not
    // what is traced, so a quiet log level still exports request spans.
    // The exporter's own HTTP client must not trace itself, and the span
    // of a request that is not sampled never reaches this layer.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(otel::tracer(p))
            // Per-span timing, thread and source attributes cost time on
            // every span and tell an SRE nothing the span tree does not.
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_target(false)
            .with_filter(EnvFilter::new(format!(
                "info,h2=off,hyper=off,reqwest=off,{}=off",
                spans::UNSAMPLED_TARGET
            )))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
    Telemetry { provider }
}
