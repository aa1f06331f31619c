//! One module per resource; `api()` merges them under `/api/v1`.
use axum::http::{Method, Uri};
use chat_store::repo::applications::shown_token;
use utoipa_axum::router::OpenApiRouter;

use crate::{AppState, error::ApiError};

mod applications;
mod chats;
pub mod health;
mod messages;
mod search;
mod validate;

pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(applications::router())
        .merge(chats::router())
        .merge(messages::router())
        .merge(search::router())
}

/// The operations whose writes go through the intake, by method and route
/// template (as `MatchedPath` gives it): an intake that folds rate limits
/// checks theirs in the accept. Every other request is checked before it
/// runs. A test holds each entry to the OpenAPI document.
pub(crate) const INTAKE_WRITES: [(Method, &str); 6] = [
    (Method::POST, "/api/v1/applications/{token}/chats"),
    (Method::PUT, "/api/v1/applications/{token}/chats/{number}"),
    (Method::PATCH, "/api/v1/applications/{token}/chats/{number}"),
    (
        Method::POST,
        "/api/v1/applications/{token}/chats/{number}/messages",
    ),
    (
        Method::PUT,
        "/api/v1/applications/{token}/chats/{number}/messages/{message}",
    ),
    (
        Method::PATCH,
        "/api/v1/applications/{token}/chats/{number}/messages/{message}",
    ),
];

pub(crate) fn accepts_through_intake(method: &Method, route: &str) -> bool {
    INTAKE_WRITES
        .iter()
        .any(|(m, r)| m == method && *r == route)
}

/// The reads of one chat or message, which read its pending entry from the
/// intake first: an intake that folds rate limits checks theirs in that
/// read, and only an admitted read goes on to the database.
pub(crate) const INTAKE_READS: [(Method, &str); 2] = [
    (Method::GET, "/api/v1/applications/{token}/chats/{number}"),
    (
        Method::GET,
        "/api/v1/applications/{token}/chats/{number}/messages/{message}",
    ),
];

/// Whether the intake checks this request's limits in its own round trip.
pub(crate) fn folds_limits(method: &Method, route: &str) -> bool {
    accepts_through_intake(method, route)
        || INTAKE_READS.iter().any(|(m, r)| m == method && *r == route)
}

pub async fn not_found(uri: Uri) -> ApiError {
    tracing::debug!(path = %shown_path(uri.path()), "no route");
    ApiError::NotFound("route")
}

/// `path` with any application token cut to its first 4 characters, for
/// logs: a token is the application's only secret.
fn shown_path(path: &str) -> String {
    const MARK: &str = "/applications/";
    let Some(at) = path.find(MARK) else {
        return path.to_owned();
    };
    let (head, rest) = path.split_at(at + MARK.len());
    let end = rest.find('/').unwrap_or(rest.len());
    let (token, tail) = rest.split_at(end);
    format!("{head}{}{tail}", shown_token(token))
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this method is not allowed on this resource".into())
}

#[cfg(test)]
mod tests {
    use super::shown_path;

    #[test]
    fn logged_paths_cut_the_token() {
        assert_eq!(
            shown_path("/api/v1/applications/Zq3nF0cV8l2h1mRkT5wYxA/chats/x"),
            "/api/v1/applications/Zq3n…/chats/x"
        );
        assert_eq!(
            shown_path("/api/v1/applications/ab"),
            "/api/v1/applications/ab"
        );
        assert_eq!(shown_path("/nowhere"), "/nowhere");
    }
}
