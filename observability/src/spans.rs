//! Every span the system opens, named and attributed here once, in
//! OpenTelemetry's conventions for HTTP servers and for messaging: the
//! request's server span, and a job's `send`, `receive` and `process`
//! spans. Other crates open them through these functions and record
//! outcomes through [`failed`] and [`settled`]; none names an attribute.
use opentelemetry::{global, propagation::Extractor, trace::TraceContextExt};
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    otel,
    propagate::{self, Linked},
};

/// A queue as spans name it: `messaging.destination.name`, and what it
/// runs on (`messaging.system`).
#[derive(Clone, Copy, Debug)]
pub struct Destination {
    pub queue: &'static str,
    pub system: &'static str,
}

/// The SERVER span of one HTTP request; its name and route are known only
/// once routing ran, and [`finish_http`] sets them.
pub fn http_server(method: &str, request_id: &str) -> Span {
    tracing::info_span!(
        "http request",
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        "http.request.header.x-request-id" = %request_id,
        http.route = Empty,
        http.response.status_code = Empty,
    )
}

/// Makes `span` a child of the trace context the request's headers carry
/// (`traceparent`, `tracestate`), given as name and value pairs.
pub fn continue_remote(span: &Span, headers: &[(&str, &str)]) {
    if !otel::enabled() {
        return;
    }
    let parent = global::get_text_map_propagator(|p| p.extract(&Pairs(headers)));
    // Fails only if the span is filtered out of the OpenTelemetry layer.
    let _ = span.set_parent(parent);
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

/// Records the request's route and status on its server span, names it
/// `<method> <route>`, and returns its trace id when it is traced, for
/// the client to quote.
pub fn finish_http(span: &Span, method: &str, route: &str, status: u16) -> Option<String> {
    span.record("http.route", route);
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        failed(span);
    }
    if !otel::enabled() {
        return None;
    }
    // A started span ignores a recorded `otel.name`, so the name is set on
    // the OpenTelemetry span itself.
    let context = span.context();
    context.span().update_name(format!("{method} {route}"));
    let trace = context.span().span_context().clone();
    trace.is_valid().then(|| trace.trace_id().to_string())
}

/// The INTERNAL span of reserving a number or a version for a write.
pub fn reserve(what: &'static str) -> Span {
    tracing::info_span!(
        "reserve",
        otel.name = %format_args!("reserve {what}"),
        otel.status_code = Empty,
    )
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

/// The CONSUMER span of one delivery of a job, a root until it is made to
/// continue its sender's trace.
pub fn receive(from: Destination, message_id: &str, attempt: u32, queue_wait_ms: i64) -> Span {
    tracing::info_span!(
        parent: None,
        "receive",
        otel.name = %format_args!("receive {}", from.queue),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = from.system,
        messaging.destination.name = from.queue,
        messaging.operation.type = "receive",
        messaging.message.id = message_id,
        chat.job.attempt = i64::from(attempt),
        chat.job.queue_wait_ms = queue_wait_ms,
        chat.job.outcome = Empty,
    )
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

/// Records how a `receive` span's job was settled (`acked`, `retry`,
/// `dead`); anything but an ack is a failed delivery.
pub fn settled(span: &Span, outcome: &'static str) {
    span.record("chat.job.outcome", outcome);
    if outcome != "acked" {
        failed(span);
    }
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
