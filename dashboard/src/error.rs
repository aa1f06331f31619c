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
