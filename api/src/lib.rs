//! The HTTP API, version 1: routes, request extractors, views and errors.
//!
//! Owns everything a client sees on the wire: paths, content negotiation
//! (JSON, urlencoded and multipart bodies), pagination, the JSON shapes
//! and RFC 9457 problem responses. It must not know how numbers are
//! reserved or where jobs go: it calls `chat-store`'s intake and
//! repositories, and `chat-search`, through the [`ApiDeps`] the binary
//! hands it, and turns their answers into HTTP (problems rendered by
//! `chat-problem`).
//!
//! # Layout
//! - [`error`]: `ApiError`, the one place statuses are chosen.
//! - `input`: the body extractor shared by every write route, and the
//!   bounded body read (drained before a 413).
//! - [`body_deadline`]: the deadline on every request body outside
//!   `/api/v1`, whose shedder's timeout covers its own.
//! - `params`: path numbers and list cursors.
//! - `views`: response shapes; the only place rows become JSON.
//! - `routes`: one module per resource, each exposing `router()`.
//! - [`metrics`]: `GET /metrics`, and the timing of every request.
//! - [`rate_limit`]: per-token and per-address limits, 429 and the
//!   `RateLimit-*` headers.
//! - [`overload`]: the concurrency cap and request timeout, answered 503
//!   (or "outcome unknown" once a write reached storage).
//! - [`idempotency`]: `Idempotency-Key` on every write: the same request
//!   under the same key answers its first response and writes nothing new.
//! - `write`: what a write handler hands to storage besides its row.
//! - [`request_id`]: `X-Request-Id` on every response.
//! - `cors`: CORS, off unless origins are configured.
//! - [`openapi`]: the OpenAPI document, at `/api-docs/openapi.json`, and
//!   Swagger UI at `/docs`.
//! - `send`: the `reserve` and `send <queue>` spans around each accepted
//!   write, and the `traceparent` its job carries.
use std::sync::Arc;

use axum::{Extension, Router, middleware};
pub use deps::{ApiDeps, Observed};

pub mod body_deadline;
mod cors;
mod deps;
pub mod error;
pub mod idempotency;
mod input;
mod lookup;
pub mod metrics;
pub mod openapi;
pub mod overload;
mod params;
pub mod rate_limit;
pub mod request_id;
mod routes;
mod send;
mod views;
mod write;

pub use error::ApiError;

/// Where the versioned API is mounted. Shedding and rate limits apply
/// under it only, and the document adds its problem responses there.
pub(crate) const API_PREFIX: &str = "/api/v1";

/// Whether `path` is under [`API_PREFIX`].
pub(crate) fn under_api(path: &str) -> bool {
    path.strip_prefix(API_PREFIX)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Settings the API enforces on requests.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest message body accepted, in bytes.
    pub max_message_bytes: usize,
    pub rate_limits: rate_limit::RateLimits,
    pub overload: overload::OverloadLimits,
    /// Origins allowed to call the API from a browser; none by default.
    pub cors_origins: Vec<String>,
}

/// Cloned for every middleware layer of every request, so it holds only
/// `Arc`s: cloning `ApiDeps` itself (several reference counts, shared by
/// every core) cost several microseconds of CPU per POST.
#[derive(Clone)]
pub struct AppState {
    pub deps: Arc<ApiDeps>,
    pub config: Arc<ApiConfig>,
    lookup: Arc<lookup::Lookup>,
}

impl AppState {
    pub fn new(deps: ApiDeps, config: ApiConfig) -> Self {
        Self {
            deps: Arc::new(deps),
            config: Arc::new(config),
            lookup: Arc::new(lookup::Lookup::default()),
        }
    }
}

/// The whole HTTP surface: `/api/v1/…`, the health probes, and the
/// OpenAPI document with Swagger UI.
pub fn router(state: AppState) -> Router {
    let body_limit = input::body_limit(&state.config);
    let shedder = overload::Shedder::new(&state.config.overload);
    let (routes, mut doc) = openapi::routes().split_for_parts();
    openapi::complete(&mut doc);
    let routes = routes
        // On routed requests only: a method a path does not serve is a 405,
        // whatever key it carries.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::enforce,
        ))
        .merge(openapi::ui(doc))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(Extension(body_limit))
        // Shedding runs before the limiter, so an overloaded server spends
        // no Redis round trip on a request it turns away.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::enforce,
        ))
        .layer(middleware::from_fn_with_state(shedder, overload::shed));
    // Outermost, so a preflight is answered before it is counted or shed.
    let routes = match cors::layer(&state.config.cors_origins) {
        Some(cors) => routes.layer(cors),
        None => routes,
    };
    metrics::timed(routes).with_state(state)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_paths_below_the_prefix_are_under_the_api() {
        assert!(super::under_api("/api/v1/applications"));
        assert!(!super::under_api("/api/v1"));
        assert!(!super::under_api("/api/v10/applications"));
        assert!(!super::under_api("/health/live"));
    }
}
