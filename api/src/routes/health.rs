//! Liveness and readiness probes for orchestrators.
use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

use crate::{AppState, error::ApiError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
}

async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 only when both the database and the queue answer.
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (db, queue) = tokio::join!(state.backends.db.ping(), state.backends.queue.ping());
    if let Err(e) = db {
        return Err(ApiError::Unavailable(format!("database: {e}")));
    }
    if let Err(e) = queue {
        return Err(ApiError::Unavailable(format!("queue: {e}")));
    }
    Ok(Json(json!({ "status": "ready" })))
}
