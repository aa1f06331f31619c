//! RFC 9457 problem responses, the one error rendering of the API and the
//! dashboard, and what a storage failure tells a client.
//!
//! - [`Problem`]: the `application/problem+json` body, and
//!   [`Problem::response`], which renders it with its status.
//! - [`StoreFailure`]: a [`StoreError`] sorted by what the client may do
//!   about it, logged once, here, where it becomes an answer.
//!
//! It must not know any route, resource or role: those choose the status
//! and the words, and this crate renders them.
use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chat_links::StoreError;
use serde::{Deserialize, Serialize};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem: every error response, as `application/problem+json`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// Names the kind of problem; stable, so clients may match on it.
    #[serde(rename = "type")]
    #[schema(example = "/problems/not-found")]
    pub kind: String,
    /// The status's reason phrase.
    #[schema(example = "Not Found")]
    pub title: String,
    #[schema(minimum = 400, maximum = 599, example = 404)]
    pub status: u16,
    /// What went wrong with this request, for a person to read.
    #[schema(example = "application not found")]
    pub detail: String,
}

impl Problem {
    /// A problem of kind `/problems/<slug>`, titled by the status.
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    /// Names the problem otherwise than its status's reason phrase.
    pub fn titled(mut self, title: &str) -> Self {
        title.clone_into(&mut self.title);
        self
    }

    pub fn response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

/// What a storage failure means to the client that asked.
#[derive(Debug, PartialEq, Eq)]
pub enum StoreFailure {
    NotFound,
    /// A rate limit folded into the write refused it.
    RateLimited,
    /// This process has no search index: a setting, not an outage.
    SearchNotConfigured,
    /// A write was sent and its answer lost: it may have been applied.
    OutcomeUnknown,
    /// A backend is out of reach or overloaded: retry later.
    Unavailable,
    /// A fault in the request's data or the code: no client can fix it,
    /// and the cause stays in the log.
    Internal,
}

impl From<StoreError> for StoreFailure {
    /// Logged here, once, where a storage failure becomes an answer.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => StoreFailure::NotFound,
            StoreError::RateLimited => StoreFailure::RateLimited,
            StoreError::SearchNotConfigured => StoreFailure::SearchNotConfigured,
            StoreError::OutcomeUnknown(e) => {
                tracing::warn!(error = %e, "a write's outcome is unknown");
                StoreFailure::OutcomeUnknown
            }
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "storage unavailable");
                StoreFailure::Unavailable
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                StoreFailure::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_problem_renders_as_problem_json_with_its_status() {
        let response =
            Problem::new(StatusCode::NOT_FOUND, "not-found", "chat not found").response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "/problems/not-found",
                "title": "Not Found",
                "status": 404,
                "detail": "chat not found"
            })
        );
    }

    #[test]
    fn storage_failures_are_sorted_by_what_the_client_can_do() {
        assert_eq!(
            StoreFailure::from(StoreError::NotFound),
            StoreFailure::NotFound
        );
        assert_eq!(
            StoreFailure::from(StoreError::Unavailable("down".into())),
            StoreFailure::Unavailable
        );
        assert_eq!(
            StoreFailure::from(StoreError::OutcomeUnknown("cut".into())),
            StoreFailure::OutcomeUnknown
        );
        assert_eq!(
            StoreFailure::from(StoreError::Other("bug".into())),
            StoreFailure::Internal
        );
    }
}
