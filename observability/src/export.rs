//! The span pipeline behind the tracer: the exporter for the configured
//! protocol (our own for HTTP with protobuf, see [`crate::otlp_http`]; the
//! OTLP crate's for the others), inside the SDK's batch processor, with
//! every span that does not reach the collector counted in `/metrics`.
//!
//! The SDK's batch processor drops spans silently when its queue is full
//! and exposes no count, so [`Bounded`] admits spans itself: it counts
//! each span from its end until its export finishes, and refuses (and
//! counts) a span once that many equal the processor's queue size. The
//! processor's own queue therefore never overflows, and every drop is
//! counted here. A failed export counts its whole batch as dropped.
use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanProcessor},
};

use crate::{
    metrics::metrics,
    otlp_http::{self, ProtobufHttp},
};

/// The SDK's default for `OTEL_BSP_MAX_QUEUE_SIZE`.
const DEFAULT_QUEUE: usize = 2048;

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The protocol `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or
/// `OTEL_EXPORTER_OTLP_PROTOCOL` asks for; `http/protobuf`, the
/// specification's default, when neither is set or the value is unknown.
/// (Left to itself, the exporter would default to `http/json` whenever
/// that feature is compiled in.)
pub(crate) fn protocol() -> Protocol {
    let asked =
        env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
    match asked.as_deref() {
        None | Some("http/protobuf") => Protocol::HttpBinary,
        Some("http/json") => Protocol::HttpJson,
        Some("grpc") => Protocol::Grpc,
        Some(other) => {
            eprintln!(
                "unknown OTLP protocol {other:?} (expected grpc, http/protobuf or http/json); using http/protobuf"
            );
            Protocol::HttpBinary
        }
    }
}

/// The exporter for the configured protocol. gRPC builds a channel on the
/// current Tokio runtime, so this runs inside one.
fn exporter() -> Result<Exporter, String> {
    let built = match protocol() {
        Protocol::HttpBinary if !compression_asked() => {
            let config = otlp_http::Config::from_env(env)?;
            return ProtobufHttp::new(config).map(Exporter::ProtobufHttp);
        }
        Protocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_protocol(Protocol::Grpc)
            .build(),
        http => SpanExporter::builder()
            .with_http()
            .with_protocol(http)
            .build(),
    };
    built.map(Exporter::Otlp).map_err(|e| e.to_string())
}

fn compression_asked() -> bool {
    env("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION")
        .or_else(|| env("OTEL_EXPORTER_OTLP_COMPRESSION"))
        .is_some_and(|c| c != "none")
}

/// Our own exporter for OTLP/HTTP with protobuf, the default (see
/// [`crate::otlp_http`]); the OTLP crate's for the other protocols.
#[derive(Debug)]
enum Exporter {
    ProtobufHttp(ProtobufHttp),
    Otlp(SpanExporter),
}

impl opentelemetry_sdk::trace::SpanExporter for Exporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self {
            Self::ProtobufHttp(e) => e.export(batch).await,
            Self::Otlp(e) => e.export(batch).await,
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self {
            Self::ProtobufHttp(e) => e.shutdown_with_timeout(timeout),
            Self::Otlp(e) => e.shutdown_with_timeout(timeout),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        match self {
            Self::ProtobufHttp(e) => e.force_flush(),
            Self::Otlp(e) => e.force_flush(),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        match self {
            Self::ProtobufHttp(e) => e.set_resource(resource),
            Self::Otlp(e) => e.set_resource(resource),
        }
    }
}

/// The batch processor over the OTLP exporter, wrapped so that drops are
/// counted.
pub(crate) fn processor() -> Result<Bounded, String> {
    let capacity = env("OTEL_BSP_MAX_QUEUE_SIZE")
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(DEFAULT_QUEUE);
    let in_pipeline = Arc::new(AtomicUsize::new(0));
    let exporter = Counted {
        inner: exporter()?,
        in_pipeline: in_pipeline.clone(),
    };
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(capacity)
                .build(),
        )
        .build();
    // Zero-valued series from the start, so a dashboard can rate() them.
    metrics().spans_dropped("queue_full", 0);
    metrics().spans_dropped("export_failed", 0);
    Ok(Bounded {
        inner: batch,
        in_pipeline,
        capacity,
    })
}

/// Admits ended spans to the batch processor while fewer than `capacity`
/// are between their end and the end of their export.
pub(crate) struct Bounded {
    inner: BatchSpanProcessor,
    in_pipeline: Arc<AtomicUsize>,
    capacity: usize,
}

impl fmt::Debug for Bounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bounded")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // The batch processor ignores unsampled spans; so does the count.
        if span.span_context.is_sampled()
            && self.in_pipeline.fetch_add(1, Ordering::AcqRel) >= self.capacity
        {
            self.in_pipeline.fetch_sub(1, Ordering::AcqRel);
            metrics().spans_dropped("queue_full", 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, releasing each exported batch from [`Bounded`]'s count.
struct Counted<E> {
    inner: E,
    in_pipeline: Arc<AtomicUsize>,
}

impl<E> fmt::Debug for Counted<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counted").finish_non_exhaustive()
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Counted<E>
{
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.in_pipeline.fetch_sub(spans, Ordering::AcqRel);
        if result.is_err() {
            metrics().spans_dropped("export_failed", spans as u64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
