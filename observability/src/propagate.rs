//! Carrying trace context across the queue as an opaque W3C `traceparent`
//! string, so no other crate handles OpenTelemetry types.
//!
//! The sender stores the `traceparent` of its `send` span in the job, when
//! the request is sampled (see `spans::Accept`); the worker makes its
//! per-job span a child of that context ([`sender`]), and its batch span
//! the child of a lone sender ([`continue_from`]) or a link to every
//! job's sender ([`link_to`], [`Linked`]). With no collector configured
//! every function here is a no-op that returns at once.
use opentelemetry::{
    Context,
    propagation::{Injector, TextMapPropagator},
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
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

impl Linked {
    /// The trace and span ids, as a key that orders: equal exactly when
    /// the links are.
    pub fn ids(&self) -> ([u8; 16], [u8; 8]) {
        (self.0.trace_id().to_bytes(), self.0.span_id().to_bytes())
    }
}

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
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.0
}

/// A job's trace context: its `traceparent` alone. The propagator's own
/// carrier is a `HashMap` of owned, lowercased strings, built and hashed
/// for every traced write.
#[derive(Default)]
struct Carrier(Option<String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

/// The span context a `traceparent` names, read as W3C Trace Context
/// defines it; `None` when it is malformed or names no span.
///
/// Read here rather than by the SDK's propagator, which splits the value
/// into a `Vec` and wraps the result in a new `Context` only for it to be
/// taken out again: a worker reads one for every traced job, and at 100%
/// sampling that was 2% of its CPU.
fn extract(traceparent: &str) -> Option<SpanContext> {
    let mut fields = traceparent.trim().split('-');
    let version = hex(fields.next()?, 2)?;
    let trace_id = TraceId::from_hex(hex(fields.next()?, 32)?).ok()?;
    let span_id = SpanId::from_hex(hex(fields.next()?, 16)?).ok()?;
    let flags = u8::from_str_radix(hex(fields.next()?, 2)?, 16).ok()?;
    // Version ff is forbidden; 00 has exactly these four fields, and a
    // later version may append more.
    if version == "ff" || (version == "00" && fields.next().is_some()) {
        return None;
    }
    // Only the sampled flag is defined; others are cleared, as the
    // specification asks of a parser that does not know them.
    let flags = TraceFlags::new(flags) & TraceFlags::SAMPLED;
    let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    context.is_valid().then_some(context)
}

/// `field` when it is `digits` lowercase hexadecimal digits, the only
/// form the specification allows.
fn hex(field: &str, digits: usize) -> Option<&str> {
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    (field.len() == digits && field.bytes().all(lower_hex)).then_some(field)
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
    let context = extract(traceparent)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn context(flags: TraceFlags) -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            flags,
            false,
            TraceState::default(),
        )
    }

    #[test]
    fn a_traceparent_carries_a_span_context_across_the_queue_and_back() {
        for flags in [TraceFlags::SAMPLED, TraceFlags::default()] {
            let sent = context(flags);
            let carried =
                traceparent_of(&Context::new().with_remote_span_context(sent.clone())).unwrap();
            let flag = if flags.is_sampled() { "01" } else { "00" };
            assert_eq!(
                carried,
                format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flag}")
            );
            let received = extract(&carried).unwrap();
            assert_eq!(received.trace_id(), sent.trace_id());
            assert_eq!(received.span_id(), sent.span_id());
            assert_eq!(received.is_sampled(), flags.is_sampled());
            assert!(received.is_remote());
        }
    }

    #[test]
    fn no_context_and_a_malformed_traceparent_carry_nothing() {
        assert_eq!(traceparent_of(&Context::new()), None);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(extract(bad).is_none(), "{bad:?} was accepted");
        }
    }

    /// A later version may add fields after the flags, and flags not yet
    /// defined are dropped rather than refused.
    #[test]
    fn a_later_version_and_unknown_flags_are_read_as_the_specification_asks() {
        let later = extract("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-next");
        let later = later.expect("a later version with more fields is read");
        assert_eq!(later.trace_id(), context(TraceFlags::SAMPLED).trace_id());
        assert_eq!(later.span_id(), context(TraceFlags::SAMPLED).span_id());
        assert_eq!(later.trace_flags(), TraceFlags::SAMPLED);
        let unknown = extract(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe ").unwrap();
        assert_eq!(unknown.trace_flags(), TraceFlags::default());
    }
}
