//! Ended spans written straight into an OTLP `ExportTraceServiceRequest`
//! in protobuf, the body of an OTLP/HTTP export.
//!
//! The OTLP exporter first copies every span into generated message
//! structs (cloning each span and allocating a string per attribute key
//! and value, and a vector per id) and then encodes those: at 100%
//! sampling that was 7% of a worker's CPU. Here each field goes from the
//! span to the buffer once. The messages and field numbers are those of
//! `opentelemetry/proto/trace/v1/trace.proto` and `common/v1/common.proto`;
//! the tests check the bytes against the exporter's own conversion.
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::{
    Array, InstrumentationScope, KeyValue, Value,
    trace::{SpanContext, SpanId, SpanKind, Status},
};
use opentelemetry_sdk::{Resource, trace::SpanData};

/// Protobuf's wire types that these messages use.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// `SpanFlags`: the low byte holds the W3C trace flags, and these two say
/// whether the parent (or the linked span) is known to be remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// The resource every span of the process shares, encoded once as the
/// body of a `Resource` message, with its schema URL.
#[derive(Debug, Default)]
pub(crate) struct EncodedResource {
    body: Vec<u8>,
    schema_url: String,
}

impl EncodedResource {
    pub(crate) fn new(resource: &Resource) -> Self {
        let mut w = Wire::default();
        for (key, value) in resource.iter() {
            w.message(1, |w| key_value(w, key.as_str(), value));
        }
        Self {
            body: w.0,
            schema_url: resource.schema_url().unwrap_or_default().to_owned(),
        }
    }
}

/// The request exporting `spans`, all from `resource`, grouped by their
/// instrumentation scope.
pub(crate) fn request(resource: &EncodedResource, spans: &[SpanData]) -> Vec<u8> {
    let mut scopes: Vec<&InstrumentationScope> = Vec::new();
    for span in spans {
        if !scopes.contains(&&span.instrumentation_scope) {
            scopes.push(&span.instrumentation_scope);
        }
    }
    // A span encodes to about 300 bytes; a guess spares most regrowth.
    let mut w = Wire(Vec::with_capacity(256 + spans.len() * 320));
    w.message(1, |w| {
        // Written even when empty: the exporter always sends a resource.
        w.message(1, |w| w.0.extend_from_slice(&resource.body));
        for scope in scopes {
            w.message(2, |w| {
                w.message(1, |w| instrumentation_scope(w, scope));
                for span in spans.iter().filter(|s| &s.instrumentation_scope == scope) {
                    w.message(2, |w| self::span(w, span));
                }
                w.string(3, scope.schema_url().unwrap_or_default());
            });
        }
        w.string(3, &resource.schema_url);
    });
    w.0
}

fn instrumentation_scope(w: &mut Wire, scope: &InstrumentationScope) {
    w.string(1, scope.name());
    w.string(2, scope.version().unwrap_or_default());
    attributes(w, 3, scope.attributes());
}

fn span(w: &mut Wire, span: &SpanData) {
    let context = &span.span_context;
    w.len_field(1, &context.trace_id().to_bytes());
    w.len_field(2, &context.span_id().to_bytes());
    trace_state(w, 3, context);
    if span.parent_span_id != SpanId::INVALID {
        w.len_field(4, &span.parent_span_id.to_bytes());
    }
    w.string(5, &span.name);
    w.varint_field(6, kind(&span.span_kind));
    w.fixed64(7, nanos(span.start_time));
    w.fixed64(8, nanos(span.end_time));
    attributes(w, 9, &span.attributes);
    w.varint_field(10, span.dropped_attributes_count.into());
    for event in &span.events.events {
        w.message(11, |w| {
            w.fixed64(1, nanos(event.timestamp));
            w.string(2, &event.name);
            attributes(w, 3, &event.attributes);
            w.varint_field(4, event.dropped_attributes_count.into());
        });
    }
    w.varint_field(12, span.events.dropped_count.into());
    for link in &span.links.links {
        let linked = &link.span_context;
        w.message(13, |w| {
            w.len_field(1, &linked.trace_id().to_bytes());
            w.len_field(2, &linked.span_id().to_bytes());
            trace_state(w, 3, linked);
            attributes(w, 4, &link.attributes);
            w.varint_field(5, link.dropped_attributes_count.into());
            w.fixed32(6, flags(linked, linked.is_remote()));
        });
    }
    w.varint_field(14, span.links.dropped_count.into());
    w.message(15, |w| {
        let (code, message) = match &span.status {
            Status::Unset => (0, ""),
            Status::Ok => (1, ""),
            Status::Error { description } => (2, description.as_ref()),
        };
        w.string(2, message);
        w.varint_field(3, code);
    });
    w.fixed32(16, flags(context, span.parent_span_is_remote));
}

fn trace_state(w: &mut Wire, field: u32, context: &SpanContext) {
    let state = context.trace_state();
    if *state != Default::default() {
        w.string(field, &state.header());
    }
}

fn flags(context: &SpanContext, remote: bool) -> u32 {
    let remote = if remote { IS_REMOTE } else { 0 };
    u32::from(context.trace_flags().to_u8()) | HAS_IS_REMOTE | remote
}

/// `SpanKind` as the protocol numbers it (0 is unspecified).
fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn attributes<'a>(w: &mut Wire, field: u32, attributes: impl IntoIterator<Item = &'a KeyValue>) {
    for kv in attributes {
        w.message(field, |w| key_value(w, kv.key.as_str(), &kv.value));
    }
}

fn key_value(w: &mut Wire, key: &str, value: &Value) {
    w.string(1, key);
    w.message(2, |w| any_value(w, value));
}

/// An `AnyValue`, whose one set field is written even when it holds its
/// type's default: that is how `false` differs from no value.
fn any_value(w: &mut Wire, value: &Value) {
    match value {
        Value::Bool(b) => w.varint_always(2, u64::from(*b)),
        Value::I64(i) => w.varint_always(3, *i as u64),
        Value::F64(f) => w.fixed64_always(4, f.to_bits()),
        Value::String(s) => w.string_always(1, s.as_str()),
        Value::Array(array) => w.message(5, |w| match array {
            Array::Bool(values) => each(w, values, |w, b| w.varint_always(2, u64::from(*b))),
            Array::I64(values) => each(w, values, |w, i| w.varint_always(3, *i as u64)),
            Array::F64(values) => each(w, values, |w, f| w.fixed64_always(4, f.to_bits())),
            Array::String(values) => each(w, values, |w, s| w.string_always(1, s.as_str())),
            // Array types added later are left out rather than misencoded.
            _ => {}
        }),
        // Likewise value types added later: the key stays, with no value.
        _ => {}
    }
}

/// Each of `values` as one `AnyValue` of an `ArrayValue`.
fn each<T>(w: &mut Wire, values: &[T], mut one: impl FnMut(&mut Wire, &T)) {
    for value in values {
        w.message(1, |w| one(w, value));
    }
}

/// A protobuf writer. Fields holding their type's default are left out,
/// as proto3 encoders do, except through the `_always` writers.
#[derive(Default)]
struct Wire(Vec<u8>);

impl Wire {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn key(&mut self, field: u32, wire_type: u32) {
        self.varint(u64::from(field << 3 | wire_type));
    }

    fn varint_field(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.varint_always(field, value);
        }
    }

    fn varint_always(&mut self, field: u32, value: u64) {
        self.key(field, VARINT);
        self.varint(value);
    }

    fn fixed64(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.fixed64_always(field, value);
        }
    }

    fn fixed64_always(&mut self, field: u32, value: u64) {
        self.key(field, FIXED64);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn fixed32(&mut self, field: u32, value: u32) {
        if value != 0 {
            self.key(field, FIXED32);
            self.0.extend_from_slice(&value.to_le_bytes());
        }
    }

    fn string(&mut self, field: u32, value: &str) {
        self.len_field(field, value.as_bytes());
    }

    fn string_always(&mut self, field: u32, value: &str) {
        self.len_always(field, value.as_bytes());
    }

    fn len_field(&mut self, field: u32, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.len_always(field, bytes);
        }
    }

    fn len_always(&mut self, field: u32, bytes: &[u8]) {
        self.key(field, LEN);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    /// A nested message, written by `body` in place. Its length is known
    /// only afterwards: one byte is set aside for it, which fits most
    /// messages (under 128 bytes), and the rest is made room for.
    fn message(&mut self, field: u32, body: impl FnOnce(&mut Self)) {
        self.key(field, LEN);
        let at = self.0.len();
        self.0.push(0);
        body(self);
        let len = self.0.len() - at - 1;
        if len < 0x80 {
            self.0[at] = len as u8;
        } else {
            let mut prefix = Wire(Vec::with_capacity(10));
            prefix.varint(len as u64);
            self.0.splice(at..=at, prefix.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, time::Duration};

    use opentelemetry::trace::{Event, Link, SpanContext, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::{
        tonic::collector::trace::v1::ExportTraceServiceRequest,
        transform::{
            common::tonic::ResourceAttributesWithSchema,
            trace::tonic::group_spans_by_resource_and_scope,
        },
    };
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message;

    use super::*;

    fn context(trace: u128, span: u64, flags: TraceFlags, remote: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            flags,
            remote,
            TraceState::default(),
        )
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_765_000_000_000 + ms)
    }

    /// A span with every part a span can have, each made to differ by `n`.
    fn full(n: u64, scope: &InstrumentationScope) -> SpanData {
        let state = TraceState::from_key_value([("vendor", "x"), ("other", "y")]).unwrap();
        let own = SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736 + u128::from(n)),
            SpanId::from(0x00f0_67aa_0ba9_02b7 + n),
            TraceFlags::SAMPLED,
            false,
            state,
        );
        let long = "a value longer than one hundred and twenty-eight bytes, so that its \
                    key-value message needs a two-byte length prefix to be written right";
        SpanData {
            span_context: own,
            parent_span_id: SpanId::from(7 + n),
            parent_span_is_remote: n.is_multiple_of(2),
            span_kind: [SpanKind::Consumer, SpanKind::Server, SpanKind::Internal][n as usize % 3]
                .clone(),
            name: Cow::Owned(format!("receive messages {n}")),
            start_time: at(n),
            end_time: at(n + 3),
            attributes: vec![
                KeyValue::new("messaging.system", "redis"),
                KeyValue::new("chat.job.attempt", n as i64 - 1),
                KeyValue::new("negative", -5_i64),
                KeyValue::new("zero", 0_i64),
                KeyValue::new("ratio", 0.25),
                KeyValue::new("nothing", 0.0),
                KeyValue::new("flag", false),
                KeyValue::new("empty", ""),
                KeyValue::new("long", long),
                KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("ints", Value::Array(Array::I64(vec![0, -1, 300]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![1.5, 0.0]))),
                KeyValue::new(
                    "strings",
                    Value::Array(Array::String(vec!["a".into(), "".into()])),
                ),
            ],
            dropped_attributes_count: n as u32,
            events: {
                let mut events = SpanEvents::default();
                events.events.push(Event::new(
                    "log",
                    at(n + 1),
                    vec![KeyValue::new("message", "hello")],
                    1,
                ));
                events.events.push(Event::with_name("bare"));
                events.dropped_count = 2;
                events
            },
            links: {
                let mut links = SpanLinks::default();
                links.links.push(Link::new(
                    context(9, 10, TraceFlags::SAMPLED, true),
                    vec![KeyValue::new("why", "batch")],
                    0,
                ));
                links.links.push(Link::with_context(context(
                    11,
                    12,
                    TraceFlags::default(),
                    false,
                )));
                links.dropped_count = 3;
                links
            },
            status: match n % 3 {
                0 => Status::Unset,
                1 => Status::Ok,
                _ => Status::error("it failed"),
            },
            instrumentation_scope: scope.clone(),
        }
    }

    /// A span with nothing but what every span has.
    fn bare(scope: &InstrumentationScope) -> SpanData {
        SpanData {
            span_context: context(1, 2, TraceFlags::default(), false),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(""),
            start_time: UNIX_EPOCH,
            end_time: UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        }
    }

    /// What the OTLP exporter sends for `spans`, with scopes in name order.
    fn exporters(resource: &Resource, spans: &[SpanData]) -> ExportTraceServiceRequest {
        let resource = ResourceAttributesWithSchema::from(resource);
        let mut request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans.to_vec(), &resource),
        };
        sorted(&mut request);
        request
    }

    fn ours(resource: &Resource, spans: &[SpanData]) -> ExportTraceServiceRequest {
        let body = request(&EncodedResource::new(resource), spans);
        let mut request = ExportTraceServiceRequest::decode(body.as_slice()).expect("protobuf");
        sorted(&mut request);
        request
    }

    fn sorted(request: &mut ExportTraceServiceRequest) {
        for resource in &mut request.resource_spans {
            resource.scope_spans.sort_by(|a, b| {
                a.scope
                    .as_ref()
                    .map(|s| &s.name)
                    .cmp(&b.scope.as_ref().map(|s| &s.name))
            });
        }
    }

    #[test]
    fn spans_encode_to_what_the_otlp_exporter_sends() {
        let resource = Resource::builder()
            .with_service_name("chat")
            .with_attributes([KeyValue::new("deployment.environment.name", "test")])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.30.0")
            .build();
        let chat = InstrumentationScope::builder("chat").build();
        let other = InstrumentationScope::builder("other")
            .with_version("1.2.3")
            .with_schema_url("https://example.com/schema")
            .with_attributes([KeyValue::new("scope.attribute", 1_i64)])
            .build();
        let spans: Vec<SpanData> = (0..40)
            .map(|n| full(n, if n % 5 == 0 { &other } else { &chat }))
            .chain([bare(&chat), bare(&other)])
            .collect();
        let expected = exporters(&resource, &spans);
        assert_eq!(expected.resource_spans[0].scope_spans.len(), 2);
        assert_eq!(ours(&resource, &spans), expected);
        // So large a request takes several bytes to give each length.
        assert!(request(&EncodedResource::new(&resource), &spans).len() > 16_384);
    }

    #[test]
    fn an_empty_resource_and_no_spans_encode_as_the_exporter_does() {
        let empty = Resource::builder_empty().build();
        assert_eq!(ours(&empty, &[]), exporters(&empty, &[]));
        let scope = InstrumentationScope::builder("chat").build();
        let one = [bare(&scope)];
        assert_eq!(ours(&empty, &one), exporters(&empty, &one));
    }
}
