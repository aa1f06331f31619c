//! `ApiError`: every failure a handler can return, and its RFC 9457
//! `application/problem+json` rendering. Statuses are chosen here only.
use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chat_links::StoreError;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// Another request under the same `Idempotency-Key` is running: the
    /// caller adds `Retry-After`.
    #[error("{0}")]
    Conflict(String),
    /// Load shed: the caller adds `Retry-After`.
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Unavailable(String),
    /// This process cannot search: a setting, not an outage.
    #[error(
        "search is not configured: set ELASTICSEARCH_URL on every process, or run `chat serve`, which keeps its own embedded index"
    )]
    SearchNotConfigured,
    /// A write reached storage and its answer was lost: it may have been
    /// applied. Never "retry later", which could apply it twice.
    #[error("{0}")]
    OutcomeUnknown(String),
    #[error("{0}")]
    Internal(String),
}

/// An RFC 9457 problem: every error response, as `application/problem+json`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// Names the kind of problem; stable, so clients may match on it.
    #[serde(rename = "type")]
    #[schema(example = "/problems/not-found")]
    kind: &'a str,
    /// The status's reason phrase.
    #[schema(example = "Not Found")]
    title: &'a str,
    #[schema(minimum = 400, maximum = 599, example = 404)]
    status: u16,
    /// What went wrong with this request, for a person to read.
    #[schema(example = "application not found")]
    detail: String,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type")
            }
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation-failed"),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "idempotency-key-in-use"),
            ApiError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::SearchNotConfigured => {
                (StatusCode::SERVICE_UNAVAILABLE, "search-not-configured")
            }
            ApiError::OutcomeUnknown(_) => (StatusCode::INTERNAL_SERVER_ERROR, "outcome-unknown"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl ApiError {
    /// The answer to a write that may or may not have been applied.
    pub(crate) fn outcome_unknown() -> Self {
        ApiError::OutcomeUnknown(
            "the write reached storage but its outcome could not be confirmed; \
             send it again with the same Idempotency-Key to learn it, or read the \
             resource before writing again"
                .into(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug) = self.parts();
        let kind = format!("/problems/{slug}");
        let detail = match &self {
            // The cause was logged where it happened; clients get no internals.
            ApiError::Internal(_) => "the server failed to handle this request".to_owned(),
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(Problem {
                kind: &kind,
                title: status.canonical_reason().unwrap_or("Error"),
                status: status.as_u16(),
                detail,
            }),
        )
            .into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("resource"),
            // `rate_limit::enforce` answers with the limit's figures.
            StoreError::RateLimited => ApiError::TooManyRequests("rate limit exceeded".into()),
            StoreError::SearchNotConfigured => ApiError::SearchNotConfigured,
            StoreError::OutcomeUnknown(e) => {
                tracing::warn!(error = %e, "a write's outcome is unknown");
                ApiError::outcome_unknown()
            }
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "storage unavailable");
                ApiError::Unavailable("storage is unavailable, retry later".into())
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                ApiError::Internal(other.to_string())
            }
        }
    }
}
