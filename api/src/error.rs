//! `ApiError`: every failure a handler can return, and the status and
//! problem kind of each, chosen here only; `chat_problem` renders them.
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chat_links::StoreError;
pub use chat_problem::Problem;
use chat_problem::StoreFailure;

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
        let detail = match &self {
            // The cause was logged where it happened; clients get no internals.
            ApiError::Internal(_) => "the server failed to handle this request".to_owned(),
            other => other.to_string(),
        };
        Problem::new(status, slug, detail).response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match StoreFailure::from(e) {
            StoreFailure::NotFound => ApiError::NotFound("resource"),
            // `rate_limit::enforce` answers with the limit's figures.
            StoreFailure::RateLimited => ApiError::TooManyRequests("rate limit exceeded".into()),
            StoreFailure::SearchNotConfigured => ApiError::SearchNotConfigured,
            StoreFailure::OutcomeUnknown => ApiError::outcome_unknown(),
            StoreFailure::Unavailable => {
                ApiError::Unavailable("storage is unavailable, retry later".into())
            }
            StoreFailure::Internal => ApiError::Internal("storage failure".into()),
        }
    }
}
