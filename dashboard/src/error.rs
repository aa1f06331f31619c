//! Every way a dashboard request can fail, rendered as RFC 9457
//! `application/problem+json`, except an unauthenticated page request,
//! which is sent to the login form.
use axum::{
    Json,
    http::{StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use chat_store::StoreError;
use serde::Serialize;

#[derive(Debug)]
pub enum DashError {
    /// A JSON route without credentials.
    Unauthorized,
    /// A page without credentials.
    LoginFirst,
    Forbidden(String),
    /// `DASHBOARD_READ_ONLY` is set.
    ReadOnly,
    NotFound(&'static str),
    BadRequest(String),
    Unavailable(String),
    /// This address failed the token too often; retry after this long.
    TooManyAttempts(std::time::Duration),
}

impl From<StoreError> for DashError {
    fn from(e: StoreError) -> Self {
        DashError::Unavailable(e.to_string())
    }
}

#[derive(Serialize)]
struct Problem {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let (status, slug, title, detail) = match self {
            DashError::LoginFirst => return Redirect::to("/admin/login").into_response(),
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
            DashError::TooManyAttempts(wait) => {
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(Problem {
                        kind: "/problems/too-many-attempts".into(),
                        title: "Too Many Requests",
                        status: 429,
                        detail: too_many_attempts(wait),
                    }),
                )
                    .into_response();
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/problem+json"),
                );
                headers.insert(header::RETRY_AFTER, retry_after(wait));
                return response;
            }
        };
        let mut response = (
            status,
            Json(Problem {
                kind: format!("/problems/{slug}"),
                title,
                status: status.as_u16(),
                detail,
            }),
        )
            .into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
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
