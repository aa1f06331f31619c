//! `GET /metrics`, and the middleware that traces and times every HTTP
//! request.
//!
//! Each request runs in a SERVER span named `<method> <route template>`,
//! whose parent is the caller's W3C `traceparent` when it sends one; the
//! response carries the trace id in `x-trace-id` when the request was
//! traced. The request metric and the span name use the route template
//! (`MatchedPath`), never the raw path, so tokens and numbers cannot blow
//! up label sets or leak into traces. Routing happens inside the router,
//! so an inner layer tags the response with its route and the outer
//! layer, which also sees fallbacks and rejected bodies, records it.
use std::time::Instant;

use crate::Observed;
use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use chat_observability::{
    metrics::{self, metrics},
    otel, spans,
};
use chat_queue::QueueName;

#[derive(Clone)]
struct Route(String);

/// Times every request of `router`, by method, route and status.
pub(crate) fn timed<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .route_layer(middleware::from_fn(tag_route))
        .layer(middleware::from_fn(record))
}

async fn tag_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response
            .extensions_mut()
            .insert(Route(route.as_str().to_owned()));
    }
    response
}

/// The response header that tells a client which trace to quote.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

async fn record(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(crate::request_id::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let carried: Vec<(&str, &str)> = if otel::enabled() {
        ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|name| {
                let value = request.headers().get(name)?.to_str().ok()?;
                Some((name, value))
            })
            .collect()
    } else {
        Vec::new()
    };
    let span = spans::HttpServer::open(method.as_str(), &request_id, &carried);
    let mut response = span.instrument(next.run(request)).await;
    let status = response.status().as_u16();
    let route = response
        .extensions()
        .get::<Route>()
        .map_or("unmatched", |r| r.0.as_str())
        .to_owned();
    if let Some(trace_id) = span.finish(method.as_str(), &route, status)
        && let Ok(value) = HeaderValue::from_str(&trace_id)
    {
        response.headers_mut().insert(TRACE_ID_HEADER, value);
    }
    let elapsed = started.elapsed();
    // An access log line, off by default; inside the span, so it carries
    // the request's trace id.
    span.in_scope(|| tracing::debug!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "request"));
    metrics().http_request(method.as_str(), &route, status, elapsed.as_secs_f64());
    response
}

/// `GET /metrics` in the OpenMetrics text format. The queue gauges are
/// read from the queue at scrape time, so every process that serves this
/// reports the same depths.
pub fn router(deps: Observed) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(deps)
}

/// `/metrics` with the health probes, for a process without the API (a
/// worker or a scheduler on `METRICS_PORT`), whose readiness also says
/// whether its workers are paused for a backend.
pub fn standalone_router(deps: Observed) -> Router {
    router(deps.clone()).merge(crate::routes::health::probes(deps))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    operation_id = "metrics",
    responses((status = 200, description = "Every series, in the OpenMetrics text format",
        body = String, content_type = "application/openmetrics-text"))
)]
pub(crate) async fn scrape(State(deps): State<Observed>) -> Response {
    let m = metrics();
    for queue in QueueName::ALL {
        match deps.queue.stats(queue).await {
            Ok(s) => {
                for (state, jobs) in [
                    ("ready", s.ready),
                    ("in_flight", s.in_flight),
                    ("retrying", s.retrying),
                    ("dead", s.dead),
                    ("done", s.done),
                ] {
                    m.queue_jobs(queue.as_str(), state, jobs);
                }
                if queue.holds_accepted_writes() {
                    m.dead_alert(queue.as_str(), s.dead > 0);
                }
            }
            // The other series still answer; the gauges keep their last value.
            Err(e) => {
                tracing::warn!(queue = queue.as_str(), error = %e, "queue stats for /metrics failed")
            }
        }
    }
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(),
    )
        .into_response()
}
