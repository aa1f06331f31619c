//! The JSON twins of the pages, for tools (with `Authorization: Bearer
//! <ADMIN_TOKEN>`).
use axum::{Json, extract::State};
use chat_ops::{
    audit::{self, AuditEntry},
    pauses::{self, Pause},
    runs::{self, RunRecord},
};
use chat_queue::{DeadJob, QueueName, QueueStats};
use serde::Serialize;

use crate::{Dashboard, error::DashError, payload};

#[derive(Serialize)]
pub(crate) struct QueueView {
    queue: &'static str,
    #[serde(flatten)]
    stats: QueueStats,
    /// Who paused the queue's workers, and when; `null` while they claim.
    paused: Option<Pause>,
}

#[derive(Serialize)]
pub(crate) struct DeadView {
    queue: &'static str,
    jobs: Vec<DeadJob>,
}

/// Exact counts per queue and state, and which queues are paused.
pub(crate) async fn queues(State(d): State<Dashboard>) -> Result<Json<Vec<QueueView>>, DashError> {
    let paused = pauses::all(&d.deps.db).await?;
    let mut out = Vec::new();
    for q in QueueName::ALL {
        out.push(QueueView {
            queue: q.as_str(),
            stats: d.deps.queue.stats(q).await?,
            paused: paused.iter().find(|p| p.queue == q.as_str()).cloned(),
        });
    }
    Ok(Json(out))
}

/// The newest dead jobs of each queue, with their failure histories.
pub(crate) async fn dead(State(d): State<Dashboard>) -> Result<Json<Vec<DeadView>>, DashError> {
    let mut out = Vec::new();
    for q in QueueName::ALL {
        out.push(DeadView {
            queue: q.as_str(),
            jobs: d.deps.queue.dead_jobs(q, 50).await?,
        });
    }
    // One lookup of the applications for every queue's jobs.
    let payloads: Vec<&str> = out
        .iter()
        .flat_map(|v| v.jobs.iter().map(|j| j.payload.as_str()))
        .collect();
    let mut shown = payload::for_operators(&d.deps, &payloads)
        .await?
        .into_iter();
    for job in out.iter_mut().flat_map(|v| v.jobs.iter_mut()) {
        job.payload = shown.next().expect("one shown payload per job");
    }
    Ok(Json(out))
}

/// The newest scheduler runs of every task, newest first.
pub(crate) async fn runs(State(d): State<Dashboard>) -> Result<Json<Vec<RunRecord>>, DashError> {
    Ok(Json(runs::recent(&d.deps.db, None, 100).await?))
}

pub(crate) async fn audit(State(d): State<Dashboard>) -> Result<Json<Vec<AuditEntry>>, DashError> {
    Ok(Json(audit::recent(&d.deps.db, 200).await?))
}
