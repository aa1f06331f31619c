//! Trace export: the API's SERVER span reaches an OTLP collector (one
//! started inside the test), continues the caller's `traceparent`, and
//! its trace id comes back in `x-trace-id`; a dead collector costs the
//! requests nothing.
mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use common::{App, Stack, free_port, profiles};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::any_value::Value as Any,
    trace::v1::{Span, span::SpanKind},
};
use prost::Message;
use serde_json::json;

type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP receiver: keeps every span with its service name.
async fn collector() -> (u16, Received) {
    let received: Received = Arc::default();
    async fn traces(State(received): State<Received>, body: Bytes) -> &'static str {
        let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
        let mut spans = received.lock().unwrap();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Any::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        ""
    }
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn int_attribute(span: &Span, key: &str) -> Option<i64> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Any::IntValue(i) => Some(*i),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_span_continues_the_callers_trace_and_reaches_the_collector() {
    for profile in profiles() {
        let (port, received) = collector().await;
        let stack = Stack::new(profile).await;
        let endpoint = format!("http://127.0.0.1:{port}");
        let app = stack
            .spawn(
                "serve",
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                    ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ],
            )
            .await;
        let token = app.create_app("traced").await;
        let chat = app.create_chat(&token).await;
        let trace = uuid::Uuid::new_v4().simple().to_string();
        let caller = &uuid::Uuid::new_v4().simple().to_string()[..16];
        let r = app
            .http
            .post(app.url(&format!("/applications/{token}/chats/{chat}/messages")))
            .header("traceparent", format!("00-{trace}-{caller}-01"))
            .json(&json!({ "body": "traced" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-trace-id"], trace.as_str());

        let deadline = Instant::now() + Duration::from_secs(20);
        let (service, server) = loop {
            let found = received
                .lock()
                .unwrap()
                .iter()
                .find(|(_, s)| hex(&s.trace_id) == trace && s.kind == SpanKind::Server as i32)
                .cloned();
            if let Some(found) = found {
                break found;
            }
            assert!(
                Instant::now() < deadline,
                "{profile:?}: no server span arrived"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(service, "chat");
        assert_eq!(
            hex(&server.parent_span_id),
            caller,
            "parented to the caller"
        );
        assert_eq!(
            server.name,
            "POST /api/v1/applications/{token}/chats/{number}/messages"
        );
        assert_eq!(
            int_attribute(&server, "http.response.status_code"),
            Some(201),
            "{:?}",
            server.attributes
        );
        assert!(
            !server.name.contains(&token),
            "the token never appears in a span name"
        );
        stack.cleanup().await;
    }
}

/// Sequential POST latencies, in microseconds, sorted.
async fn post_latencies(app: &App, n: usize) -> Vec<u128> {
    let token = app.create_app("latency").await;
    let chat = app.create_chat(&token).await;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let r = app
            .post_json(
                &format!("/applications/{token}/chats/{chat}/messages"),
                json!({ "body": format!("m{i}") }),
            )
            .await;
        assert_eq!(r.status(), 201);
        out.push(started.elapsed().as_micros());
    }
    out.sort_unstable();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_collector_costs_requests_nothing() {
    // One data dir each: two embedded servers must not share one.
    let quiet = Stack::new(common::Profile::Embedded).await;
    let stack = Stack::new(common::Profile::Embedded).await;
    let none = quiet.spawn("serve", &[]).await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let dead = stack
        .spawn(
            "serve",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", closed.as_str()),
                ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ],
        )
        .await;
    let without = post_latencies(&none, 300).await;
    let with = post_latencies(&dead, 300).await;
    let p50 = |v: &[u128]| v[v.len() / 2];
    let p99 = |v: &[u128]| v[v.len() * 99 / 100];
    let (a50, a99) = (p50(&without), p99(&without));
    let (b50, b99) = (p50(&with), p99(&with));
    println!("POST p50/p99 µs: no exporter {a50}/{a99}, dead collector {b50}/{b99}");
    // Generous: the same machine runs both, and other tests run beside.
    assert!(b50 <= a50 * 3 + 2_000, "p50 {b50} µs against {a50} µs");
    quiet.cleanup().await;
    stack.cleanup().await;
}
