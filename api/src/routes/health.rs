//! Liveness and readiness probes for orchestrators.
use std::time::Duration;

use crate::Observed;
use axum::{Json, extract::State};
use chat_observability::health;
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

/// 200 only when the database and the queue answer.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = TAG,
    operation_id = "ready",
    responses((status = 200, description = "The database and the queue answer", body = Status))
)]
async fn ready(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    // Not the workers' pauses: an API that takes writes stays in rotation
    // while search, say, is down (`/metrics` and the dashboard show those).
    readiness(&state.deps.observed(), false).await
}

/// How long a probe waits for each backend: a frozen server must make the
/// probe fail, not hang it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The readiness answer of any role: its backends answer within
/// [`PROBE_TIMEOUT`], and, with `workers`, none of this process's workers
/// is paused for a backend.
async fn readiness(deps: &Observed, workers: bool) -> Result<Json<Status>, ApiError> {
    let (db, queue) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, deps.db.ping()),
        tokio::time::timeout(PROBE_TIMEOUT, deps.queue.ping())
    );
    // The probe is open to anyone: it names what is down, and the error
    // itself (hosts, users, server versions) goes to the log only.
    let down = |what: &'static str, answer: Result<Result<(), String>, _>| match answer {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            tracing::warn!(backend = what, error = %e, "readiness: a backend is down");
            Some(ApiError::Unavailable(format!("{what} is unavailable")))
        }
        Err(_) => {
            tracing::warn!(
                backend = what,
                "readiness: a backend gave no answer within 2 s"
            );
            Some(ApiError::Unavailable(format!(
                "{what} gave no answer within 2 s"
            )))
        }
    };
    let db = db.map(|r| r.map_err(|e| e.to_string()));
    let queue = queue.map(|r| r.map_err(|e| e.to_string()));
    if let Some(e) = down("database", db).or_else(|| down("queue", queue)) {
        return Err(e);
    }
    if let Some(outage) = health::current().into_iter().find(|_| workers) {
        tracing::warn!(backend = %outage.backend, error = %outage.error, "readiness: workers are paused");
        return Err(ApiError::Unavailable(format!(
            "workers are paused: {} is unavailable",
            outage.backend
        )));
    }
    Ok(Json(Status { status: "ready" }))
}

/// Liveness and readiness for a process without the API (`chat worker`,
/// `chat scheduler`), served beside its `/metrics`.
pub(crate) fn probes(deps: Observed) -> axum::Router {
    axum::Router::new()
        .route("/health/live", axum::routing::get(live))
        .route(
            "/health/ready",
            axum::routing::get(
                |State(b): State<Observed>| async move { readiness(&b, true).await },
            ),
        )
        .with_state(deps)
}
