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
//!
//! A request's sampling is decided before its span is built ([`decide`]):
//! most requests are not sampled at a low ratio, and a span handed to the
//! OpenTelemetry layer costs that layer a builder, its attributes and a
//! context switch on every poll whether or not it is ever exported.
use std::{
    cell::Cell,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use opentelemetry::{
    Context, KeyValue, global,
    trace::{
        Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TracerProvider,
    },
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{
        Config, IdGenerator, RandomIdGenerator, SamplingDecision, SamplingResult,
        SdkTracerProvider, ShouldSample,
    },
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

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
    let sampler = KeepLinked(Config::default().sampler);
    let _ = SAMPLER.set(sampler.clone());
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler)
        .with_id_generator(ChosenTraceIds)
        .with_resource(resource())
        .build();
    global::set_tracer_provider(provider.clone());
    let _ = TRACER.set(tracer(&provider));
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

/// The tracer of spans built without `tracing` (see [`crate::spans::Delivery`]).
static TRACER: OnceLock<opentelemetry_sdk::trace::SdkTracer> = OnceLock::new();

/// The tracer to build spans on directly; `None` when nothing is exported.
pub(crate) fn sdk_tracer() -> Option<&'static opentelemetry_sdk::trace::SdkTracer> {
    TRACER.get()
}

/// The provider's sampler, for [`decide`] to ask before a span exists.
static SAMPLER: OnceLock<KeepLinked> = OnceLock::new();

thread_local! {
    /// The trace id [`decide`] drew for the root span [`start_as`] is
    /// about to start on this thread.
    static CHOSEN: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Random ids, except for a root span whose trace id [`decide`] already
/// drew: a ratio sampler decides on the trace id, so the span must start
/// under the id it was sampled on, or a root would be kept with the
/// ratio's square.
#[derive(Debug)]
struct ChosenTraceIds;

impl IdGenerator for ChosenTraceIds {
    fn new_trace_id(&self) -> TraceId {
        CHOSEN
            .take()
            .unwrap_or_else(|| RandomIdGenerator::default().new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        RandomIdGenerator::default().new_span_id()
    }
}

/// What the sampler decided for a span before it was built.
pub(crate) enum Decision {
    /// Build the span and hand it to the OpenTelemetry layer; start it
    /// with [`start_as`], under this trace id when it has no parent.
    Sampled(Option<TraceId>),
    /// Build no OpenTelemetry span. This context, made current while the
    /// work runs, names the trace and a span id for log lines and the
    /// response, and tells any span opened inside that its trace is not
    /// sampled.
    Dropped(Context),
}

/// Asks the provider's sampler about a span named `name` under `parent`
/// (the caller's context, or none), as the SDK would when starting it.
pub(crate) fn decide(parent: &Context, name: &str, kind: SpanKind) -> Decision {
    let Some(sampler) = SAMPLER.get() else {
        return Decision::Sampled(None);
    };
    let remote = parent.span().span_context().clone();
    let (trace_id, chosen) = if remote.is_valid() {
        (remote.trace_id(), None)
    } else {
        let drawn = RandomIdGenerator::default().new_trace_id();
        (drawn, Some(drawn))
    };
    let result = sampler.should_sample(Some(parent), trace_id, name, &kind, &[], &[]);
    match result.decision {
        SamplingDecision::Drop => {
            Decision::Dropped(Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                RandomIdGenerator::default().new_span_id(),
                TraceFlags::default(),
                false,
                result.trace_state,
            )))
        }
        SamplingDecision::RecordOnly | SamplingDecision::RecordAndSample => {
            Decision::Sampled(chosen)
        }
    }
}

/// Starts `span` now, under `trace_id` when [`decide`] drew one, so the
/// SDK's own sampling of it sees what [`decide`] saw. Its parent must be
/// set already.
pub(crate) fn start_as(span: &tracing::Span, trace_id: Option<TraceId>) {
    CHOSEN.set(trace_id);
    let _ = span.context();
    CHOSEN.set(None);
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceState;
    use opentelemetry_sdk::trace::Sampler;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn remote(sampled: bool) -> Context {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            RandomIdGenerator::default().new_trace_id(),
            RandomIdGenerator::default().new_span_id(),
            flags,
            true,
            TraceState::default(),
        ))
    }

    /// Decided before the span exists, a request's sampling is what the
    /// SDK then sees: a kept root starts under the trace id it was
    /// sampled on (a fresh id would be sampled again, keeping roots with
    /// the ratio's square), and a dropped one still names a trace.
    #[test]
    fn a_span_is_started_under_the_decision_taken_before_it_was_built() {
        let sampler = KeepLinked(Box::new(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(0.5),
        ))));
        assert!(SAMPLER.set(sampler.clone()).is_ok());
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampler)
            .with_id_generator(ChosenTraceIds)
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(tracer(&provider)));
        tracing::subscriber::with_default(subscriber, || {
            let started = |parent: &Context, drawn: Option<TraceId>| {
                let span = tracing::info_span!("request");
                let _ = span.set_parent(parent.clone());
                start_as(&span, drawn);
                span.context().span().span_context().clone()
            };
            let (mut kept, mut dropped) = (0, 0);
            for _ in 0..200 {
                match decide(&Context::new(), "request", SpanKind::Server) {
                    Decision::Sampled(Some(drawn)) => {
                        let ids = started(&Context::new(), Some(drawn));
                        assert_eq!(ids.trace_id(), drawn);
                        assert!(ids.is_sampled());
                        kept += 1;
                    }
                    Decision::Sampled(None) => panic!("a root is sampled on a drawn id"),
                    Decision::Dropped(cx) => {
                        let ids = cx.span().span_context().clone();
                        assert!(ids.is_valid() && !ids.is_sampled());
                        dropped += 1;
                    }
                }
            }
            assert!(kept > 50 && dropped > 50, "{kept} kept, {dropped} dropped");

            let caller = remote(true);
            let Decision::Sampled(None) = decide(&caller, "request", SpanKind::Server) else {
                panic!("a sampled caller's request is sampled, in the caller's trace");
            };
            let ids = started(&caller, None);
            assert_eq!(ids.trace_id(), caller.span().span_context().trace_id());
            assert!(ids.is_sampled());

            let caller = remote(false);
            let Decision::Dropped(cx) = decide(&caller, "request", SpanKind::Server) else {
                panic!("an unsampled caller's request is not sampled");
            };
            let ids = cx.span().span_context().clone();
            assert_eq!(ids.trace_id(), caller.span().span_context().trace_id());
            assert_ne!(ids.span_id(), caller.span().span_context().span_id());
        });
    }
}
