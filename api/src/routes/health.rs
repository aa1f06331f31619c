//! Liveness and readiness probes for orchestrators.
use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{AppState, error::ApiError};

const TAG: &str = "health";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
}

/// A probe's answer.
#[derive(Serialize, ToSchema)]
#[schema(as = HealthStatus)]
struct Status {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Answers while the process runs.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = TAG,
    operation_id = "live",
    responses((status = 200, description = "The process runs", body = Status))
)]
async fn live() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// 200 only when both the database and the queue answer.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = TAG,
    operation_id = "ready",
    responses((status = 200, description = "The database and the queue answer", body = Status))
)]
async fn ready(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    let (db, queue) = tokio::join!(state.backends.db.ping(), state.backends.queue.ping());
    if let Err(e) = db {
        return Err(ApiError::Unavailable(format!("database: {e}")));
    }
    if let Err(e) = queue {
        return Err(ApiError::Unavailable(format!("queue: {e}")));
    }
    Ok(Json(Status { status: "ready" }))
}
