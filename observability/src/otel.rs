//! Trace export over OTLP, configured by the standard `OTEL_*` variables.
//!
//! With neither `OTEL_EXPORTER_OTLP_ENDPOINT` nor
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, no OpenTelemetry layer is
//! installed at all, so nothing is exported and spans cost what plain
//! `tracing` spans cost. With one set, spans go through the SDK's batch
//! processor: a bounded queue (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048 by
//! default) drained by its own thread, so an unreachable collector drops
//! spans instead of blocking a request or a worker. The SDK itself reads
//! the sampler (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`) and the
//! resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`).
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::{global, trace::TracerProvider};
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};

fn set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: callers skip trace-context work otherwise.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether a collector is configured.
pub fn export_configured() -> bool {
    set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
}

/// The service name when neither variable gives one; `unknown_service`
/// otherwise, which finds nothing in Jaeger.
fn resource() -> Resource {
    let named = set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name("chat").build()
    }
}

/// Builds the tracer provider when a collector is configured, and
/// installs the W3C trace-context propagator that reads `traceparent`.
pub(crate) fn provider() -> Option<SdkTracerProvider> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    if !export_configured() {
        return None;
    }
    // OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf is the one compiled in;
    // the builder warns about and ignores any other value.
    let exporter = match SpanExporter::builder().with_http().build() {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("trace export disabled: {e}");
            return None;
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build();
    global::set_tracer_provider(provider.clone());
    ENABLED.store(true, Ordering::Relaxed);
    Some(provider)
}

pub(crate) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::SdkTracer {
    provider.tracer("chat")
}
