//! Trace export over OTLP, configured by the standard `OTEL_*` variables.
//!
//! With neither `OTEL_EXPORTER_OTLP_ENDPOINT` nor
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, no OpenTelemetry layer is
//! installed at all, so nothing is exported and spans cost what plain
//! `tracing` spans cost. With one set, spans go through the SDK's batch
//! processor: a bounded queue (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048 by
//! default) drained by its own thread, so an unreachable collector drops
//! spans, counted (see `export`), instead of blocking a request or a
//! worker. `OTEL_EXPORTER_OTLP_PROTOCOL` picks `grpc`, `http/protobuf`
//! (the default) or `http/json`. The SDK itself reads the sampler
//! (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`) and the resource
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`); the sampler is
//! wrapped so that a batch span is kept whenever a job it links to was.
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::{
    Context, KeyValue, global,
    trace::{Link, SpanKind, TraceContextExt, TraceId, TracerProvider},
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Config, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample},
};

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
    let processor = match crate::export::processor() {
        Ok(processor) => processor,
        Err(e) => {
            eprintln!("trace export disabled: {e}");
            return None;
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(KeepLinked(Config::default().sampler))
        .with_resource(resource())
        .build();
    global::set_tracer_provider(provider.clone());
    ENABLED.store(true, Ordering::Relaxed);
    Some(provider)
}

pub(crate) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::SdkTracer {
    provider.tracer("chat")
}

/// The sampler the environment configures, except that a span with no
/// parent is kept when any span it links to was kept.
///
/// A worker's batch span has no parent (it serves many requests) and
/// links to each job's sender. Under a ratio sampler it would otherwise
/// be sampled on its own coin toss, and a sampled request would link to a
/// batch that was never recorded.
#[derive(Clone, Debug)]
struct KeepLinked(Box<dyn ShouldSample>);

impl ShouldSample for KeepLinked {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let has_parent = parent_context.is_some_and(|cx| cx.has_active_span());
        if !has_parent && links.iter().any(|l| l.span_context.is_sampled()) {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: Default::default(),
            };
        }
        self.0
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}
