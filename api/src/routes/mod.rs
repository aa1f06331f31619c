//! One module per resource; `api()` merges them under `/api/v1`.
use axum::http::Uri;
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

pub async fn not_found(uri: Uri) -> ApiError {
    tracing::debug!(%uri, "no route");
    ApiError::NotFound("route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this method is not allowed on this resource".into())
}
