//! The operators' view of the job queues.
//!
//! Owns the `/dashboard` routes. Today it serves exact per-queue counts,
//! the newest dead jobs and the scheduler's run history as JSON; the dashboard issue builds the UI, retry
//! and kill actions and trace links on top. It must not know how jobs are
//! processed: it reads queue state through `chat-store` only.
use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use chat_store::{
    Backends,
    queue::{DeadJob, QueueName, QueueStats},
    repo::runs::{self, RunRecord},
};
use serde::Serialize;

#[derive(Serialize)]
struct QueueView {
    queue: &'static str,
    #[serde(flatten)]
    stats: QueueStats,
}

#[derive(Serialize)]
struct DeadView {
    queue: &'static str,
    jobs: Vec<DeadJob>,
}

pub fn router(backends: Backends) -> Router {
    Router::new()
        .route("/dashboard/api/queues", get(queues))
        .route("/dashboard/api/dead", get(dead))
        .route("/dashboard/api/runs", get(runs))
        .with_state(backends)
}

async fn queues(State(b): State<Backends>) -> Result<Json<Vec<QueueView>>, (StatusCode, String)> {
    let mut out = Vec::new();
    for q in QueueName::ALL {
        let stats = b
            .queue
            .stats(q)
            .await
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        out.push(QueueView {
            queue: q.as_str(),
            stats,
        });
    }
    Ok(Json(out))
}

async fn dead(State(b): State<Backends>) -> Result<Json<Vec<DeadView>>, (StatusCode, String)> {
    let mut out = Vec::new();
    for q in QueueName::ALL {
        let jobs = b
            .queue
            .dead_jobs(q, 50)
            .await
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        out.push(DeadView {
            queue: q.as_str(),
            jobs,
        });
    }
    Ok(Json(out))
}

/// The newest scheduler runs of every task, newest first.
async fn runs(State(b): State<Backends>) -> Result<Json<Vec<RunRecord>>, (StatusCode, String)> {
    runs::recent(&b.db, None, 100)
        .await
        .map(Json)
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}
