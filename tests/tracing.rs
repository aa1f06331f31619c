//! Trace export: the API's SERVER span reaches an OTLP collector (one
//! started inside the test), continues the caller's `traceparent`, and
//! its trace id comes back in `x-trace-id`; the trace continues through
//! the queue into the worker's batch, the bulk INSERT and the indexing,
//! with the span tree and links the messaging conventions ask for; a dead
//! collector costs the requests nothing.
mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, header},
    routing::post,
};
use common::{App, Stack, free_port, profiles};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as Any,
    trace::v1::{Span, span::SpanKind},
};
use prost::Message;
use serde_json::json;

type Received = Arc<Mutex<Vec<(String, Span)>>>;

fn keep(received: &Received, request: ExportTraceServiceRequest) {
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
}

/// The gRPC side of the collector.
struct Grpc(Received);

#[async_trait::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP receiver on one port: HTTP with protobuf or JSON bodies, and
/// gRPC (HTTP/2); keeps every span with its service name.
async fn collector() -> (u16, Received) {
    let received: Received = Arc::default();
    async fn traces(
        State(received): State<Received>,
        headers: HeaderMap,
        body: Bytes,
    ) -> &'static str {
        let json = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
        let request = if json {
            serde_json::from_slice(&body).expect("OTLP JSON")
        } else {
            ExportTraceServiceRequest::decode(body).expect("OTLP protobuf")
        };
        keep(&received, request);
        ""
    }
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .route_service(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            TraceServiceServer::new(Grpc(received.clone())),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn str_attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some(s.clone()),
            _ => None,
        })
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
        let (trace, caller) = ids();
        post_traced(&app, &token, chat, &trace, &caller).await;

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
        let request_id = str_attribute(&server, "http.request.header.x-request-id")
            .expect("the request id on the server span");
        assert_eq!(request_id.len(), 32, "{request_id}");

        // A request with no caller's trace starts its own, under the id
        // its response names.
        let r = app
            .http
            .get(app.url(&format!("/applications/{token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let own = r.headers()["x-trace-id"].to_str().unwrap().to_owned();
        wait_for(&received, "the root request's server span", |all| {
            all.iter().any(|(_, s)| {
                hex(&s.trace_id) == own
                    && s.kind == SpanKind::Server as i32
                    && s.parent_span_id.is_empty()
                    && s.name == "GET /api/v1/applications/{token}"
            })
        })
        .await;
        stack.cleanup().await;
    }
}

async fn metrics_of(app: &App) -> String {
    let url = format!("{}/metrics", app.base);
    app.http
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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
                // Small, so that the drops this run causes are certain.
                ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
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

    // Every span lost is counted, whether refused by the full queue or
    // lost with a failed export.
    let dropped = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("chat_trace_spans_dropped_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics_of(&dead).await;
        if dropped(&text) > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dropped spans counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counted = dropped(&metrics_of(&none).await);
    assert_eq!(
        counted, 0.0,
        "without a collector nothing is traced, so nothing drops"
    );
    quiet.cleanup().await;
    stack.cleanup().await;
}

/// The spans received so far in `trace`.
fn spans_in(received: &Received, trace: &str) -> Vec<Span> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s)| hex(&s.trace_id) == trace)
        .map(|(_, s)| s.clone())
        .collect()
}

/// The one span named `name` among `spans`, with its kind checked.
fn one<'a>(spans: &'a [Span], name: &str, kind: SpanKind) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {name:?} in {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert_eq!(found[0].kind, kind as i32, "{name} is {kind:?}");
    found[0]
}

fn parent_of(child: &Span, parent: &Span) {
    assert_eq!(
        hex(&child.parent_span_id),
        hex(&parent.span_id),
        "{:?} is a child of {:?}",
        child.name,
        parent.name
    );
}

fn links_to(from: &Span, to: &Span) -> bool {
    from.links
        .iter()
        .any(|l| l.span_id == to.span_id && l.trace_id == to.trace_id)
}

/// Waits until `done` holds for the spans received so far.
async fn wait_for(received: &Received, what: &str, done: impl Fn(&[(String, Span)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if done(&received.lock().unwrap()) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn traced_env(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ]
}

/// Elasticsearch's `_bulk` when the emulator is available (distributed
/// profile), tantivy otherwise: the span under an index batch.
fn search_env(profile: common::Profile) -> (Vec<(String, String)>, Option<std::process::Child>) {
    if profile == common::Profile::Distributed && std::env::var("OSMEM_SERVER").is_ok() {
        let (url, child) = common::search::start_emulator();
        (vec![("ELASTICSEARCH_URL".into(), url)], Some(child))
    } else {
        (Vec::new(), None)
    }
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// POSTs a message as a caller whose span is `caller` in `trace`,
/// sampled or not (the `traceparent` flags).
async fn post_in_trace(app: &App, token: &str, chat: i64, traceparent: (&str, &str, bool)) {
    post_with(app, token, chat, traceparent, false).await;
}

/// Posts a message in the caller's trace; `queued` sends it under an
/// `Idempotency-Key`, which takes the job path on every profile (a plain
/// create on the embedded profile is written in the intake's transaction).
async fn post_with(
    app: &App,
    token: &str,
    chat: i64,
    traceparent: (&str, &str, bool),
    queued: bool,
) {
    let (trace, caller, sampled) = traceparent;
    let flags = if sampled { "01" } else { "00" };
    let mut request = app
        .http
        .post(app.url(&format!("/applications/{token}/chats/{chat}/messages")))
        .header("traceparent", format!("00-{trace}-{caller}-{flags}"));
    if queued {
        request = request.header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
    }
    let r = request
        .json(&json!({ "body": "traced" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["x-trace-id"],
        trace,
        "every response names its trace"
    );
}

async fn post_traced(app: &App, token: &str, chat: i64, trace: &str, caller: &str) {
    post_in_trace(app, token, chat, (trace, caller, true)).await;
}

fn ids() -> (String, String) {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let caller = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (trace, caller)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_message_is_traced_from_the_request_through_the_queue_to_the_index() {
    for profile in profiles() {
        let (port, received) = collector().await;
        let stack = Stack::new(profile).await;
        let (mut env, mut emulator) = search_env(profile);
        let bulk_name = if emulator.is_some() {
            "_bulk"
        } else {
            "index tantivy"
        };
        env.extend(traced_env(&format!("http://127.0.0.1:{port}")));
        let app = stack.spawn("serve", &pairs(&env)).await;
        let token = app.create_app("traced").await;
        let chat = app.create_chat(&token).await;
        let (trace, caller) = ids();
        post_traced(&app, &token, chat, &trace, &caller).await;

        // The last spans to end: the index job's, once its ack is written.
        wait_for(&received, "the index job's receive span", |all| {
            all.iter()
                .any(|(_, s)| hex(&s.trace_id) == trace && s.name == "receive index")
        })
        .await;
        let spans = spans_in(&received, &trace);
        let server = one(
            &spans,
            "POST /api/v1/applications/{token}/chats/{number}/messages",
            SpanKind::Server,
        );
        assert_eq!(hex(&server.parent_span_id), caller);
        let reserve = one(&spans, "reserve message number", SpanKind::Internal);
        parent_of(reserve, server);
        let send = one(&spans, "send messages", SpanKind::Producer);
        parent_of(send, reserve);
        let system = if profile == common::Profile::Distributed {
            "redis"
        } else {
            "sqlite"
        };
        assert_eq!(
            str_attribute(send, "messaging.system").as_deref(),
            Some(system)
        );
        assert_eq!(
            str_attribute(send, "messaging.destination.name").as_deref(),
            Some("messages")
        );

        // A batch of one job is its sender's child; so is the embedded
        // intake's write of a group of one request.
        let process = one(&spans, "process messages", SpanKind::Consumer);
        parent_of(process, send);
        assert_eq!(
            int_attribute(process, "messaging.batch.message_count"),
            Some(1),
            "{:?}",
            process.attributes
        );
        if profile == common::Profile::Embedded {
            // The row is written in the intake's transaction: no job
            // carried it, so no span received one.
            assert!(
                spans.iter().all(|s| s.name != "receive messages"),
                "{:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
        } else {
            // The job's own span is its sender's child too, and links to
            // the batch.
            let receive = one(&spans, "receive messages", SpanKind::Consumer);
            parent_of(receive, send);
            assert!(links_to(receive, process), "the job links to its batch");
            assert_eq!(int_attribute(receive, "chat.job.attempt"), Some(1));
            assert!(int_attribute(receive, "chat.job.queue_wait_ms").is_some_and(|ms| ms >= 0));
            assert_eq!(
                str_attribute(receive, "chat.job.outcome").as_deref(),
                Some("acked")
            );
            assert!(
                receive.end_time_unix_nano >= process.end_time_unix_nano,
                "the job's span lasts until its ack, after the write"
            );
        }

        let insert = one(&spans, "INSERT messages", SpanKind::Client);
        parent_of(insert, process);
        let db = if profile == common::Profile::Distributed {
            "mysql"
        } else {
            "sqlite"
        };
        assert_eq!(str_attribute(insert, "db.system.name").as_deref(), Some(db));
        assert_eq!(int_attribute(insert, "db.operation.batch.size"), Some(1));

        let send_index = one(&spans, "send index", SpanKind::Producer);
        parent_of(send_index, process);
        let receive_index = one(&spans, "receive index", SpanKind::Consumer);
        parent_of(receive_index, send_index);
        let process_index = one(&spans, "process index", SpanKind::Consumer);
        parent_of(process_index, send_index);
        assert!(links_to(receive_index, process_index));
        let bulk_kind = if emulator.is_some() {
            SpanKind::Client
        } else {
            SpanKind::Internal
        };
        let bulk = one(&spans, bulk_name, bulk_kind);
        parent_of(bulk, process_index);
        if emulator.is_some() {
            assert_eq!(
                str_attribute(bulk, "db.system.name").as_deref(),
                Some("elasticsearch")
            );
        }
        assert!(
            spans.iter().all(|s| !s.name.contains(&token)
                && s.attributes
                    .iter()
                    .all(|kv| !format!("{:?}", kv.value).contains(&token))),
            "the token appears in no span"
        );
        if let Some(mut child) = emulator.take() {
            let _ = child.kill();
        }
        stack.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_jobs_links_to_every_sender_and_each_job_links_back() {
    for profile in profiles() {
        let (port, received) = collector().await;
        let stack = Stack::new(profile).await;
        let env = traced_env(&format!("http://127.0.0.1:{port}"));
        let api = stack.spawn("api", &pairs(&env)).await;
        let token = api.create_app("batched").await;
        let chat = api.create_chat(&token).await;
        // Three requests, each its own trace, queued while no worker runs.
        let mut traces = Vec::new();
        for _ in 0..3 {
            let (trace, caller) = ids();
            post_with(&api, &token, chat, (&trace, &caller, true), true).await;
            traces.push(trace);
        }
        wait_for(&received, "the three send spans", |all| {
            all.iter()
                .filter(|(_, s)| s.name == "send messages")
                .count()
                == 3
        })
        .await;
        let mut worker_env = env.clone();
        // A long linger so one claim of three jobs makes one batch.
        worker_env.push(("BATCH_LINGER_MS".into(), "300".into()));
        let _worker = stack.spawn("worker", &pairs(&worker_env)).await;
        wait_for(&received, "three acked jobs", |all| {
            all.iter()
                .filter(|(_, s)| s.name == "receive messages")
                .count()
                == 3
        })
        .await;

        let all: Vec<Span> = received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .collect();
        let process = one(&all, "process messages", SpanKind::Consumer);
        assert!(
            process.parent_span_id.is_empty(),
            "a batch of many has no parent"
        );
        assert_eq!(
            int_attribute(process, "messaging.batch.message_count"),
            Some(3)
        );
        let insert = one(&all, "INSERT messages", SpanKind::Client);
        parent_of(insert, process);
        assert_eq!(int_attribute(insert, "db.operation.batch.size"), Some(3));
        for trace in &traces {
            let spans = spans_in(&received, trace);
            let send = one(&spans, "send messages", SpanKind::Producer);
            assert!(
                links_to(process, send),
                "the batch links to the job's sender"
            );
            // The request's own trace holds the job's span, which leads to
            // the batch.
            let receive = one(&spans, "receive messages", SpanKind::Consumer);
            parent_of(receive, send);
            assert!(links_to(receive, process), "the job links to its batch");
        }
        assert_eq!(process.links.len(), 3);
        stack.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_the_collector_over_grpc_and_http_json() {
    for protocol in ["grpc", "http/json", "http/protobuf"] {
        let (port, received) = collector().await;
        let stack = Stack::new(common::Profile::Embedded).await;
        let mut env = traced_env(&format!("http://127.0.0.1:{port}"));
        env.push(("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()));
        let app = stack.spawn("serve", &pairs(&env)).await;
        let token = app.create_app("protocols").await;
        let chat = app.create_chat(&token).await;
        let (trace, caller) = ids();
        post_traced(&app, &token, chat, &trace, &caller).await;
        // The group's write ends before the response does, so its span can
        // leave in an export before the server span's: wait for both.
        let server_name = "POST /api/v1/applications/{token}/chats/{number}/messages";
        wait_for(&received, &format!("a {protocol} export"), |all| {
            let ours = |name: &str| {
                all.iter()
                    .any(|(_, s)| hex(&s.trace_id) == trace && s.name == name)
            };
            ours("process messages") && ours(server_name)
        })
        .await;
        let spans = spans_in(&received, &trace);
        let server = one(&spans, server_name, SpanKind::Server);
        assert_eq!(hex(&server.parent_span_id), caller, "{protocol}");
        stack.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsampled_request_leaves_no_spans_in_the_worker() {
    let (port, received) = collector().await;
    let stack = Stack::new(common::Profile::Embedded).await;
    let app = stack
        .spawn(
            "serve",
            &pairs(&traced_env(&format!("http://127.0.0.1:{port}"))),
        )
        .await;
    let token = app.create_app("unsampled").await;
    let chat = app.create_chat(&token).await;
    let (unsampled, caller) = ids();
    post_in_trace(&app, &token, chat, (&unsampled, &caller, false)).await;
    // A sampled message after it: once its job's span arrives, the
    // unsampled job, queued first, has been processed too.
    let (sampled, caller) = ids();
    post_traced(&app, &token, chat, &sampled, &caller).await;
    wait_for(&received, "the sampled job", |all| {
        all.iter()
            .any(|(_, s)| hex(&s.trace_id) == sampled && s.name == "receive index")
    })
    .await;
    assert!(
        spans_in(&received, &unsampled).is_empty(),
        "the caller chose not to sample: nothing of it is exported"
    );
    stack.cleanup().await;
}
