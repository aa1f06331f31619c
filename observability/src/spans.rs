//! Every span the system opens, named and attributed here once, in
//! OpenTelemetry's conventions for HTTP servers and for messaging: the
//! request's server span ([`HttpServer`]), and a job's `send`, `receive`
//! ([`Delivery`]) and `process` spans. Other crates open them through
//! these functions and record outcomes through [`failed`] and
//! [`Delivery::settled`]; none names an attribute.
use std::sync::Mutex;

use opentelemetry::{
    Context, KeyValue,
    context::FutureExt,
    global,
    propagation::Extractor,
    trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer},
};
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    otel::{self, Decision},
    propagate::{self, Linked},
};

/// A queue as spans name it: `messaging.destination.name`, and what it
/// runs on (`messaging.system`).
#[derive(Clone, Copy, Debug)]
pub struct Destination {
    pub queue: &'static str,
    pub system: &'static str,
}

impl Destination {
    /// The messaging attributes of an SDK-built span that does
    /// `operation` (`send`, `receive`) on this queue.
    fn attributes(&self, operation: &'static str) -> [KeyValue; 3] {
        [
            KeyValue::new("messaging.system", self.system),
            KeyValue::new("messaging.destination.name", self.queue),
            KeyValue::new("messaging.operation.type", operation),
        ]
    }
}

/// Where the SERVER spans of requests whose trace is not sampled go: a
/// target the OpenTelemetry layer filters out (see [`crate::init`]), so
/// they cost what a log-only span costs.
pub(crate) const UNSAMPLED_TARGET: &str = "chat_observability::spans::unsampled";

macro_rules! http_span {
    ($target:expr, $method:expr, $request_id:expr) => {
        tracing::info_span!(
            target: $target,
            "http request",
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = %$method,
            "http.request.header.x-request-id" = %$request_id,
            http.route = Empty,
            http.response.status_code = Empty,
        )
    };
}

/// The SERVER span of one HTTP request, whose sampling is decided as it
/// opens. Its name and route are known only once routing ran, and
/// [`HttpServer::finish`] sets them.
pub struct HttpServer {
    span: Span,
    /// The request's trace when it is not sampled: made current around
    /// its work in place of an exported span.
    unsampled: Option<Context>,
}

impl HttpServer {
    /// Opens the span of a request that carried `headers` (as name and
    /// value pairs; `traceparent` and `tracestate` are read), continuing
    /// the caller's trace when they name one.
    pub fn open(method: &str, request_id: &str, headers: &[(&str, &str)]) -> Self {
        if !otel::enabled() {
            return Self {
                span: http_span!("chat_observability::spans", method, request_id),
                unsampled: None,
            };
        }
        let parent = global::get_text_map_propagator(|p| p.extract(&Pairs(headers)));
        match otel::decide(&parent, "http request", SpanKind::Server) {
            Decision::Sampled(trace_id) => {
                let span = http_span!("chat_observability::spans", method, request_id);
                // Fails only if the span is filtered out of the
                // OpenTelemetry layer.
                let _ = span.set_parent(parent);
                otel::start_as(&span, trace_id);
                Self {
                    span,
                    unsampled: None,
                }
            }
            Decision::Dropped(context) => Self {
                span: http_span!(UNSAMPLED_TARGET, method, request_id),
                unsampled: Some(context),
            },
        }
    }

    /// Runs the request's work inside its span and its trace.
    pub async fn instrument<F: Future>(&self, work: F) -> F::Output {
        let work = work.instrument(self.span.clone());
        match &self.unsampled {
            Some(context) => work.with_context(context.clone()).await,
            None => work.await,
        }
    }

    /// Runs `f` inside the request's span and its trace: for log lines
    /// written after its work.
    pub fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        let _current = self.unsampled.clone().map(Context::attach);
        self.span.in_scope(f)
    }

    /// Records the request's route and status, names the span
    /// `<method> <route>`, and returns the request's trace id when it is
    /// traced, sampled or not, for the client to quote.
    pub fn finish(&self, method: &str, route: &str, status: u16) -> Option<String> {
        let span = &self.span;
        span.record("http.route", route);
        span.record("http.response.status_code", i64::from(status));
        if status >= 500 {
            failed(span);
        }
        if let Some(context) = &self.unsampled {
            return Some(context.span().span_context().trace_id().to_string());
        }
        if !otel::enabled() {
            return None;
        }
        // A started span ignores a recorded `otel.name`, so the name is
        // set on the OpenTelemetry span itself.
        let context = span.context();
        context.span().update_name(format!("{method} {route}"));
        let trace = context.span().span_context().clone();
        trace.is_valid().then(|| trace.trace_id().to_string())
    }
}

struct Pairs<'a>(&'a [(&'a str, &'a str)]);

impl Extractor for Pairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

/// The spans of one accepted write, under the request's span: `reserve
/// <what>` (INTERNAL, the number or the version), and inside it `send
/// <queue>` (PRODUCER), whose `traceparent` the job carries so the
/// worker's spans continue the request's trace. Both end when this is
/// dropped.
///
/// Built on the OpenTelemetry SDK directly, like [`Delivery`]: they time
/// one call that writes no log line, and a `tracing` span would be
/// entered, locked and switched into on every poll of it.
pub struct Accept {
    reserve: Context,
    send: Context,
}

impl Accept {
    /// Opens the spans of a write reserving `what` and sending its job to
    /// `to`; `None` when the current request is not sampled (or nothing
    /// is exported), so an unsampled write builds nothing and its job
    /// carries no context: every standard sampler decides the same way
    /// for the job's spans (a parent-based one follows the parent, a
    /// ratio one hashes the same trace id), so the worker can skip
    /// building spans that would be dropped.
    pub fn open(what: &'static str, to: Destination) -> Option<Self> {
        let tracer = otel::sdk_tracer()?;
        let request = Context::current();
        if !request.span().span_context().is_sampled() {
            return None;
        }
        let reserve = tracer
            .span_builder(format!("reserve {what}"))
            .with_kind(SpanKind::Internal)
            .start_with_context(tracer, &request);
        let reserve = request.with_span(reserve);
        let send = tracer
            .span_builder(format!("send {}", to.queue))
            .with_kind(SpanKind::Producer)
            .with_attributes(to.attributes("send"))
            .start_with_context(tracer, &reserve);
        let send = reserve.with_span(send);
        Some(Self { reserve, send })
    }

    /// The `traceparent` of the `send` span, for the job to carry.
    pub fn traceparent(&self) -> Option<String> {
        propagate::traceparent_of(&self.send)
    }

    /// Marks the write as failed.
    pub fn failed(&self) {
        self.send.span().set_status(Status::error(""));
        self.reserve.span().set_status(Status::error(""));
    }
}

impl Drop for Accept {
    fn drop(&mut self) {
        self.send.span().end();
        self.reserve.span().end();
    }
}

/// The PRODUCER span of sending a job to `to`, under the current span or
/// under `parent`; the job carries its `traceparent`.
pub fn send(to: Destination, parent: Option<&Span>) -> Span {
    let parent = parent.cloned().unwrap_or_else(Span::current);
    tracing::info_span!(
        parent: &parent,
        "send",
        otel.name = %format_args!("send {}", to.queue),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = to.system,
        messaging.destination.name = to.queue,
        messaging.operation.type = "send",
    )
}

/// The CONSUMER span of one delivery of a job, from its claim until it is
/// settled: a child of the `send` span that enqueued it, and linked to
/// the batch that wrote it ([`Delivery::link_to`]). It ends when dropped.
///
/// Built on the OpenTelemetry SDK directly, not through `tracing`: a
/// worker opens one per job, none is ever entered and no log line is
/// written inside one, so a subscriber's span bookkeeping would be all
/// the cost and none of the use.
#[derive(Debug, Default)]
pub struct Delivery(Option<Mutex<opentelemetry_sdk::trace::Span>>);

impl Delivery {
    /// A delivery that leaves no span: an untraced job's.
    pub fn none() -> Self {
        Self(None)
    }

    /// Opens the span of a job sent by `sender`; an untraced one when
    /// nothing is exported.
    pub fn receive(
        from: Destination,
        sender: &Linked,
        message_id: &str,
        attempt: u32,
        queue_wait_ms: i64,
    ) -> Self {
        let Some(tracer) = otel::sdk_tracer() else {
            return Self::none();
        };
        let parent = Context::new().with_remote_span_context(sender.0.clone());
        // Room for the outcome that `settled` adds: the builder keeps this
        // vector, where one sized to the first six would be reallocated
        // for the seventh.
        let mut attributes = Vec::with_capacity(7);
        attributes.extend(from.attributes("receive"));
        attributes.extend([
            KeyValue::new("messaging.message.id", message_id.to_owned()),
            KeyValue::new("chat.job.attempt", i64::from(attempt)),
            KeyValue::new("chat.job.queue_wait_ms", queue_wait_ms),
        ]);
        // Room for the link to its batch too, which `link_to` adds.
        let span = tracer
            .span_builder(format!("receive {}", from.queue))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .with_links(Vec::with_capacity(1))
            .start_with_context(tracer, &parent);
        Self(Some(Mutex::new(span)))
    }

    fn with(&self, f: impl FnOnce(&mut opentelemetry_sdk::trace::Span)) {
        if let Some(span) = &self.0 {
            f(&mut span.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// Links the delivery to `batch`, the span that wrote its rows.
    pub fn link_to(&self, batch: &Linked) {
        self.with(|span| span.add_link(batch.0.clone(), Vec::new()));
    }

    /// Records how the job was settled (`acked`, `retry`, `dead`,
    /// `deferred`); anything but an ack is a failed delivery.
    pub fn settled(&self, outcome: &'static str) {
        self.with(|span| {
            span.set_attribute(KeyValue::new("chat.job.outcome", outcome));
            if outcome != "acked" {
                span.set_status(Status::error(""));
            }
        });
    }
}

/// Most links one batch span records: the SDK's default link limit.
const MAX_LINKS: usize = 128;

/// The CONSUMER span of processing a batch of `jobs` jobs, sent by
/// `senders` (each once): a batch of one job is its sender's child; a
/// batch of many has no parent and links to each sender.
pub fn process(from: Destination, jobs: usize, senders: &[&Linked]) -> Span {
    let span = batch(from, jobs);
    match senders {
        [one] if jobs == 1 => propagate::continue_from(&span, one),
        many => {
            for sender in many.iter().take(MAX_LINKS) {
                propagate::link_to(&span, sender);
            }
        }
    }
    span
}

fn batch(from: Destination, jobs: usize) -> Span {
    tracing::info_span!(
        parent: None,
        "process",
        otel.name = %format_args!("process {}", from.queue),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = from.system,
        messaging.destination.name = from.queue,
        messaging.operation.type = "process",
        messaging.batch.message_count = jobs as i64,
    )
}

/// Marks the work of `span` as failed.
pub fn failed(span: &Span) {
    span.record("otel.status_code", "error");
}

/// The CLIENT span of one bulk INSERT of `rows` rows into `table`, named
/// by what it writes (`upsert messages`, say).
pub fn db_insert(
    name: &'static str,
    system: &'static str,
    table: &'static str,
    rows: usize,
) -> Span {
    tracing::info_span!(
        "INSERT",
        otel.name = name,
        otel.kind = "client",
        otel.status_code = Empty,
        db.system.name = system,
        db.operation.name = "INSERT",
        db.collection.name = table,
        db.operation.batch.size = rows as i64,
    )
}
