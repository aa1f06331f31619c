//! Reading `queue_jobs` rows back as the queue's types.
use std::time::Duration;

use sea_orm::FromQueryResult;

use super::*;
use crate::{DeadJob, Failure, JobRecord, JobState};

/// A row as the listings read it, whatever its state.
#[derive(FromQueryResult)]
pub(super) struct AnyRow {
    id: i64,
    payload: String,
    attempt: i32,
    errors: String,
    trace: Option<String>,
    run_at: i64,
    dead: i64,
    lease_owner: Option<String>,
    lease_until: Option<i64>,
    enqueued_at: i64,
    /// Set when the row settles: the `run_at` it had until then.
    ready_at: Option<i64>,
}

pub(super) const ANY_COLUMNS: &str = concat!(
    "id, ",
    payload_column!(),
    ", attempt, errors, trace, run_at, dead, lease_owner, lease_until, enqueued_at, ready_at"
);

/// Which rows are in `state` at `?1` (now): the same split as `stats`.
pub(super) fn state_filter(state: JobState) -> &'static str {
    match state {
        JobState::Pending => {
            "dead = 0 AND run_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1)"
        }
        JobState::InFlight => "dead = 0 AND lease_until >= ?1",
        JobState::Retrying => {
            "dead = 0 AND run_at > ?1 AND (lease_until IS NULL OR lease_until < ?1)"
        }
        JobState::Done => "dead = 2",
        JobState::Dead => "dead = 1",
    }
}

/// `lease` turns a lease's end back into its claim time: an ack keeps the
/// lease columns, so a done row still says who ran it and when.
pub(super) fn record(r: AnyRow, now: i64, lease: Duration) -> JobRecord {
    let leased = r.lease_until.is_some_and(|until| until >= now);
    let state = match r.dead {
        DEAD => JobState::Dead,
        DONE => JobState::Done,
        _ if leased => JobState::InFlight,
        _ if r.run_at > now => JobState::Retrying,
        _ => JobState::Pending,
    };
    let failures = serde_json::from_str::<Vec<Failure>>(&r.errors).unwrap_or_default();
    let ran = matches!(state, JobState::InFlight | JobState::Done);
    let worker = match state {
        JobState::Dead => failures.last().and_then(|f| f.worker.clone()),
        _ if ran => r.lease_owner,
        _ => None,
    };
    JobRecord {
        id: r.id.to_string(),
        job_id: r.id.to_string(),
        state,
        at: r.run_at,
        payload: r.payload,
        attempt: r.attempt.max(0) as u32,
        failures,
        trace: r.trace,
        worker,
        enqueued_at: Some(r.enqueued_at),
        ready_at: if r.dead == LIVE {
            Some(r.run_at)
        } else {
            r.ready_at
        },
        started_at: r
            .lease_until
            .filter(|_| ran)
            .map(|until| until - lease.as_millis() as i64),
    }
}

/// A cursor is the last row's `run_at:id`: rows are ordered by both.
pub(super) fn parse_cursor(cursor: Option<&str>) -> (i64, i64) {
    cursor
        .and_then(|c| c.split_once(':'))
        .and_then(|(at, id)| Some((at.parse().ok()?, id.parse().ok()?)))
        .unwrap_or((i64::MAX, i64::MAX))
}

/// A dead row; `run_at` holds the time it was buried.
pub(super) fn dead(r: Row) -> DeadJob {
    DeadJob {
        id: r.id.to_string(),
        job_id: r.id.to_string(),
        buried_at: r.run_at,
        payload: r.payload,
        attempt: r.attempt.max(0) as u32,
        failures: serde_json::from_str::<Vec<Failure>>(&r.errors).unwrap_or_default(),
        trace: r.trace,
        enqueued_at: Some(r.enqueued_at),
    }
}
