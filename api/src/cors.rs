//! CORS for `/api/v1`, off unless `CORS_ALLOWED_ORIGINS` names the origins
//! (or `*`) whose pages may call the API from a browser. The dashboard is
//! never opened to other origins.
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The layer for `origins`; `None` when there are none, so that no CORS
/// header is ever sent.
pub(crate) fn layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let name = HeaderName::from_static;
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                name("x-request-id"),
                name("traceparent"),
                name("tracestate"),
            ])
            .expose_headers([
                header::LOCATION,
                header::RETRY_AFTER,
                name("x-request-id"),
                name("x-trace-id"),
                name("ratelimit-limit"),
                name("ratelimit-remaining"),
                name("ratelimit-reset"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}
