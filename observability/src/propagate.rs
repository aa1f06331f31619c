//! Carrying trace context across the queue as an opaque W3C `traceparent`
//! string, so no other crate handles OpenTelemetry types.
//!
//! The sender stores the `traceparent` of its `send` span in the job, when
//! the request is sampled (see `spans::Accept`); the worker makes its
//! per-job span a child of that context ([`sender`]), and its batch span
//! the child of a lone sender ([`continue_from`]) or a link to every
//! job's sender ([`link_to`], [`Linked`]). With no collector configured
//! every function here is a no-op that returns at once.
use std::collections::HashMap;

use opentelemetry::{
    Context,
    propagation::TextMapPropagator,
    trace::{SpanContext, TraceContextExt},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::otel::enabled;

const TRACEPARENT: &str = "traceparent";

/// A span to link to, taken from a job's `traceparent` or from a span.
/// Equal when they name the same span.
#[derive(Clone, Debug)]
pub struct Linked(pub(crate) SpanContext);

impl PartialEq for Linked {
    fn eq(&self, other: &Self) -> bool {
        self.0.trace_id() == other.0.trace_id() && self.0.span_id() == other.0.span_id()
    }
}

impl Eq for Linked {}

impl std::hash::Hash for Linked {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.trace_id().hash(state);
        self.0.span_id().hash(state);
    }
}

/// The `traceparent` of `span`, for a job it sends: `None` when nothing is
/// traced. An unsampled context is carried too, so the worker's spans
/// follow the request's sampling decision.
pub fn traceparent(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&span.context())
}

/// The `traceparent` of the span `cx` holds; `None` when it holds none.
pub(crate) fn traceparent_of(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::with_capacity(1);
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

fn extract(traceparent: &str) -> Option<Context> {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` a child of `parent` (a job's sender). Call it before the
/// span is entered.
pub fn continue_from(span: &Span, parent: &Linked) {
    if enabled() {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent.0.clone()));
    }
}

/// The sender a job's `traceparent` names, to parent or link to; `None`
/// when it was not sampled, since nothing under it would be recorded.
pub fn sender(traceparent: &str) -> Option<Linked> {
    if !enabled() {
        return None;
    }
    let context = extract(traceparent)?.span().span_context().clone();
    context.is_sampled().then_some(Linked(context))
}

/// `span` itself, for others to link to; `None` when it is not traced.
pub fn linkable(span: &Span) -> Option<Linked> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    let context = cx.span().span_context().clone();
    context.is_valid().then_some(Linked(context))
}

/// Adds a link from `span` to `to`. Before `span` starts, the sampler
/// sees the link.
pub fn link_to(span: &Span, to: &Linked) {
    span.add_link(to.0.clone());
}
