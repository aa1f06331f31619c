//! Path numbers and list cursors, parsed into problems rather than panics.
use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, RawQuery};
use axum::http::request::Parts;
use serde::{Deserialize, de::DeserializeOwned};
use utoipa::IntoParams;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: u64 = 50;
pub const MAX_LIMIT: u64 = 200;

/// The path's named segments, with malformed paths as a 400 problem.
pub struct Segments(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Segments {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Path(map)| Segments(map))
            .map_err(|e| ApiError::BadRequest(format!("malformed path: {e}")))
    }
}

impl Segments {
    pub fn token(&self) -> &str {
        self.0.get("token").map(String::as_str).unwrap_or("")
    }

    /// A positive number segment; anything else is a 400.
    pub fn number(&self, name: &'static str) -> Result<i64, ApiError> {
        let raw = self.0.get(name).map(String::as_str).unwrap_or("");
        if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::BadRequest(format!(
                "{name} must be a positive integer, got '{raw}'"
            )));
        }
        raw.parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("{name} '{raw}' is out of range")))
    }
}

/// The path of an application, as OpenAPI sees it; [`Segments`] reads it.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "only describes the path to OpenAPI")]
pub struct ApplicationPath {
    /// The application's token, as returned when it was created.
    token: String,
}

/// The path of a chat.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "only describes the path to OpenAPI")]
pub struct ChatPath {
    /// The application's token, as returned when it was created.
    token: String,
    /// The chat's number within its application.
    #[param(minimum = 1)]
    number: i64,
}

/// The path of a message.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "only describes the path to OpenAPI")]
pub struct MessagePath {
    /// The application's token, as returned when it was created.
    token: String,
    /// The chat's number within its application.
    #[param(minimum = 1)]
    number: i64,
    /// The message's number within its chat.
    #[param(minimum = 1)]
    message: i64,
}

/// A list's query string, as OpenAPI sees it; [`PageRequest`] reads it.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "only describes the query to OpenAPI")]
pub struct PageQuery {
    /// Items per page.
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<u64>,
    /// Start after this number: the `next_after` of the previous page.
    #[param(minimum = 0, default = 0)]
    after: Option<i64>,
}

/// `?limit=&after=` for lists.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub after: i64,
    pub limit: u64,
}

#[derive(Deserialize)]
struct RawPage {
    limit: Option<String>,
    after: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for PageRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw: RawPage = query_of(parts, state).await?;
        let limit = limit_in(raw.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
        let after = match raw.after.as_deref() {
            None => 0,
            Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::BadRequest(format!("after must be a non-negative integer, got '{s}'"))
            })?,
        };
        Ok(PageRequest { after, limit })
    }
}

/// The query string read into `T`; a malformed one is a 400 problem.
pub(crate) async fn query_of<T: DeserializeOwned, S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<T, ApiError> {
    let RawQuery(query) = RawQuery::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))
}

/// A page size: `default` when absent, else an integer from 1 to `max`.
/// An empty `limit=` is refused like any other non-number: the document
/// types it as an integer, and a client that sends one has a bug.
pub(crate) fn limit_in(raw: Option<&str>, default: u64, max: u64) -> Result<u64, ApiError> {
    let Some(s) = raw else {
        return Ok(default);
    };
    s.parse::<u64>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "limit must be an integer from 1 to {max}, got '{s}'"
            ))
        })
}
