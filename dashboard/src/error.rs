//! Every way a dashboard request can fail, rendered as RFC 9457
//! `application/problem+json` by `chat_problem`, as the API's are, except an unauthenticated page request,
//! which is sent to the login form. [`as_html`] turns the problems of page
//! routes into pages with the navigation and a search form around them;
//! the JSON twins under `/admin/api` keep problem+json.
use axum::{
    body::to_bytes,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};
use chat_links::StoreError;
use chat_problem::{Problem, StoreFailure};

use crate::{Dashboard, auth, pages};

#[derive(Debug)]
pub enum DashError {
    /// A JSON route without credentials.
    Unauthorized,
    /// A page without credentials: the login form, then back to this
    /// path (a GET's path and query).
    LoginFirst(Option<String>),
    Forbidden(String),
    /// `DASHBOARD_READ_ONLY` is set.
    ReadOnly,
    NotFound(&'static str),
    BadRequest(String),
    Unavailable(String),
    /// A fault no operator action fixes; the cause is in the log.
    Internal,
    /// This address failed the token too often; retry after this long.
    TooManyAttempts(std::time::Duration),
}

impl From<StoreError> for DashError {
    /// Logged once, by `StoreFailure`, where a backend's failure becomes an
    /// answer.
    fn from(e: StoreError) -> Self {
        match StoreFailure::from(e) {
            StoreFailure::NotFound => DashError::NotFound("record"),
            StoreFailure::Unavailable | StoreFailure::OutcomeUnknown => {
                DashError::Unavailable("a backend is unavailable; retry in a moment".into())
            }
            StoreFailure::SearchNotConfigured => {
                DashError::Unavailable("search is not configured on this process".into())
            }
            StoreFailure::RateLimited | StoreFailure::Internal => DashError::Internal,
        }
    }
}

impl DashError {
    /// What went wrong, in words, for a section that cannot be shown.
    pub(crate) fn detail(&self) -> String {
        match self {
            DashError::Unavailable(detail)
            | DashError::BadRequest(detail)
            | DashError::Forbidden(detail) => detail.clone(),
            DashError::NotFound(what) => format!("{what} not found"),
            DashError::Internal => INTERNAL.to_owned(),
            other => format!("{other:?}"),
        }
    }
}

const INTERNAL: &str = "the dashboard failed to handle this request; the server log has the cause";

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let (status, slug, title, detail) = match self {
            DashError::LoginFirst(next) => {
                let to = match next {
                    Some(next) => format!(
                        "/admin/login?next={}",
                        form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                    ),
                    None => "/admin/login".to_owned(),
                };
                return Redirect::to(&to).into_response();
            }
            DashError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "log in at /admin/login, or send Authorization: Bearer <ADMIN_TOKEN>".to_owned(),
            ),
            DashError::Forbidden(detail) => {
                (StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
            }
            DashError::ReadOnly => (
                StatusCode::FORBIDDEN,
                "read-only",
                "Read-only dashboard",
                "DASHBOARD_READ_ONLY is set: actions are disabled".to_owned(),
            ),
            DashError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "not-found",
                "Not Found",
                format!("{what} not found"),
            ),
            DashError::BadRequest(detail) => (
                StatusCode::BAD_REQUEST,
                "bad-request",
                "Bad Request",
                detail,
            ),
            DashError::Unavailable(detail) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service Unavailable",
                detail,
            ),
            DashError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal Server Error",
                INTERNAL.to_owned(),
            ),
            DashError::TooManyAttempts(wait) => {
                let mut response = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-attempts",
                    too_many_attempts(wait),
                )
                .response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry_after(wait));
                return response;
            }
        };
        let mut response = Problem::new(status, slug, detail).titled(title).response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// What an address that used up its token attempts is told.
pub(crate) fn too_many_attempts(wait: std::time::Duration) -> String {
    format!(
        "too many wrong admin tokens from this address; try again in {} s",
        wait.as_secs().max(1)
    )
}

pub(crate) fn retry_after(wait: std::time::Duration) -> header::HeaderValue {
    header::HeaderValue::from(wait.as_secs().max(1))
}

/// A problem body is a few hundred bytes; anything longer is not ours.
const PROBLEM_MAX: usize = 64 * 1024;

/// Renders the problems that page routes answer to a browser as HTML
/// pages, keeping their status and `Retry-After`.
pub(crate) async fn as_html(State(d): State<Dashboard>, request: Request, next: Next) -> Response {
    // Browsers ask for HTML; tools (curl, scripts with the bearer token)
    // do not, and keep the machine-readable problem.
    let wants_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if !wants_html || request.uri().path().starts_with("/admin/api/") {
        return next.run(request).await;
    }
    let headers = request.headers().clone();
    let response = next.run(request).await;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == chat_problem::CONTENT_TYPE.as_bytes());
    if !is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(problem) = to_bytes(body, PROBLEM_MAX)
        .await
        .map_err(|_| ())
        .and_then(|bytes| serde_json::from_slice::<Problem>(&bytes).map_err(|_| ()))
    else {
        return (parts.status, "the dashboard could not render its error").into_response();
    };
    let operator = auth::operator(&d, &headers);
    let page = pages::error_page(
        operator.as_ref(),
        d.config.read_only,
        &problem.title,
        &problem.detail,
    );
    let mut html = (parts.status, page).into_response();
    if let Some(retry) = parts.headers.get(header::RETRY_AFTER) {
        html.headers_mut()
            .insert(header::RETRY_AFTER, retry.clone());
    }
    html
}
