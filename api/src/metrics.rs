//! `GET /metrics`, and the middleware that times every HTTP request.
//!
//! The request metric is labelled with the route template (`MatchedPath`),
//! never the raw path, so tokens and numbers cannot blow up its label set.
//! Routing happens inside the router, so an inner layer tags the response
//! with its route and the outer layer, which also sees fallbacks and
//! rejected bodies, records it.
use std::time::Instant;

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use chat_observability::metrics::{self, metrics};
use chat_store::{Backends, queue::QueueName};

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

async fn record(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<Route>()
        .map_or("unmatched", |r| r.0.as_str());
    metrics().http_request(
        method.as_str(),
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics` in the OpenMetrics text format. The queue gauges are
/// read from the queue at scrape time, so every process that serves this
/// reports the same depths.
pub fn router(backends: Backends) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(backends)
}

async fn scrape(State(backends): State<Backends>) -> Response {
    let m = metrics();
    for queue in QueueName::ALL {
        match backends.queue.stats(queue).await {
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
