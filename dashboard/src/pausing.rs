//! Pausing and resuming a queue from the overview: workers stop claiming
//! from a paused queue within about a second, while the API keeps
//! accepting; the pause is kept in the database, so it survives every
//! restart until an operator resumes the queue. Both are audited and
//! refused in read-only mode.
use axum::{
    Extension,
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
};
use chat_ops::{audit, pauses};

use crate::{Dashboard, auth::Operator, error::DashError, queue_named};

async fn switch(
    d: &Dashboard,
    op: &Operator,
    queue: &str,
    body: &[u8],
    pause: bool,
) -> Result<Response, DashError> {
    crate::actions::posted(d, op, body)?;
    let q = queue_named(queue)?;
    let db = &d.deps.db;
    let changed = if pause {
        pauses::pause(db, q.as_str(), &op.name).await?
    } else {
        pauses::resume(db, q.as_str()).await?
    };
    if changed {
        let action = if pause { "pause" } else { "resume" };
        audit::record(db, &op.name, action, q.as_str(), None, None).await?;
    }
    Ok(Redirect::to("/admin").into_response())
}

pub(crate) async fn pause(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path(queue): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, DashError> {
    switch(&d, &op, &queue, &body, true).await
}

pub(crate) async fn resume(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path(queue): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, DashError> {
    switch(&d, &op, &queue, &body, false).await
}
