//! Job lists by queue and state: one page per state behind tabs that
//! carry each state's count, newest first, paged by cursor. Each row names
//! the job's key fields, so jobs can be told apart without opening them,
//! and carries a checkbox for the bulk actions its state offers. The dead
//! tab is the one dead list: it adds the error filter and "retry all that
//! match".
use axum::{
    Extension,
    extract::{Path, Query, State},
};
use chat_queue::{JobRecord, JobState, QueueName, QueueStats};
use maud::{Markup, html};
use serde::Deserialize;

use crate::{
    Dashboard,
    actions::{self, Action, urlencoding},
    auth::Operator,
    error::DashError,
    pages::{layout, when},
    payload, queue_named,
};

/// Jobs per list page.
const PAGE: usize = 50;

pub(crate) fn state_named(name: &str) -> Result<JobState, DashError> {
    JobState::parse(name).ok_or(DashError::NotFound("job state"))
}

pub(crate) fn state_label(s: JobState) -> &'static str {
    match s {
        JobState::Pending => "pending",
        JobState::InFlight => "in flight",
        JobState::Retrying => "scheduled for retry",
        JobState::Done => "done",
        JobState::Dead => "dead",
    }
}

/// What the time of a record means in its state.
pub(crate) fn at_label(s: JobState) -> &'static str {
    match s {
        JobState::Pending | JobState::InFlight => "ready since",
        JobState::Retrying => "due",
        JobState::Done => "done at",
        JobState::Dead => "buried",
    }
}

fn count(s: &QueueStats, state: JobState) -> u64 {
    match state {
        JobState::Pending => s.ready,
        JobState::InFlight => s.in_flight,
        JobState::Retrying => s.retrying,
        JobState::Done => s.done,
        JobState::Dead => s.dead,
    }
}

pub(crate) fn detail_href(q: QueueName, job: &JobRecord) -> String {
    let id = urlencoding(&job.id);
    match job.state {
        JobState::Dead => format!("/admin/queues/{}/dead/{id}", q.as_str()),
        s => format!("/admin/queues/{}/jobs/{}/{id}", q.as_str(), s.as_str()),
    }
}

/// A job in a list: where it is, the record, and its key fields.
pub(crate) struct Row {
    pub queue: QueueName,
    pub job: JobRecord,
    pub summary: String,
}

/// The rows of `jobs`, with their payloads read as operators see them
/// (one lookup of the applications for all of them).
pub(crate) async fn rows(
    d: &Dashboard,
    jobs: Vec<(QueueName, JobRecord)>,
) -> Result<Vec<Row>, DashError> {
    let payloads: Vec<&str> = jobs.iter().map(|(_, j)| j.payload.as_str()).collect();
    let shown = payload::for_operators(&d.deps, &payloads).await?;
    Ok(jobs
        .into_iter()
        .zip(shown)
        .map(|((queue, job), shown)| Row {
            queue,
            job,
            summary: payload::summary(&shown),
        })
        .collect())
}

/// The table of `rows`; with `select`, a checkbox per row for a bulk form.
pub(crate) fn jobs_table(rows: &[Row], select: bool) -> Markup {
    html! {
        table #jobs {
            thead {
                tr {
                    @if select { th { input type="checkbox" data-select-all title="select every job on this page"; } }
                    th { "queue" } th { "job" } th { "arguments" } th { "state" } th { "when" }
                    th { "attempt" } th { "worker" } th { "last error" }
                }
            }
            tbody {
                @for r in rows {
                    tr data-job=(r.job.job_id) {
                        @if select { td { input type="checkbox" name="id" value=(r.job.id); } }
                        td { (r.queue.as_str()) }
                        td { a href=(detail_href(r.queue, &r.job)) { (r.job.job_id) } }
                        td.arguments { (r.summary) }
                        td { (state_label(r.job.state)) }
                        td { (at_label(r.job.state)) " " (when(r.job.at)) }
                        td { (r.job.attempt) }
                        td { (r.job.worker.as_deref().unwrap_or("")) }
                        td.error { (r.job.failures.last().map(|f| f.error.as_str()).unwrap_or("")) }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    cursor: Option<String>,
    /// What the last action did, to say so.
    done: Option<String>,
    /// Dead jobs only: those with a failure whose error contains this.
    error: Option<String>,
}

pub(crate) async fn list(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path((queue, state)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> Result<Markup, DashError> {
    let q = queue_named(&queue)?;
    let state = state_named(&state)?;
    let stats = d.deps.queue.stats(q).await?;
    let filter = query
        .error
        .as_deref()
        .map(str::trim)
        .filter(|f| state == JobState::Dead && !f.is_empty());
    let (records, next) = match filter {
        Some(f) => {
            let matching = actions::matching(&d, q, Some(f)).await?;
            (matching.into_iter().map(JobRecord::from).collect(), None)
        }
        None => {
            let page = d
                .deps
                .queue
                .jobs(q, state, query.cursor.as_deref(), PAGE)
                .await?;
            (page.jobs, page.next)
        }
    };
    let rows = rows(&d, records.into_iter().map(|j| (q, j)).collect()).await?;
    let offered = if d.config.read_only {
        &[][..]
    } else {
        Action::for_state(state)
    };
    let base = format!("/admin/queues/{}/jobs/{}", q.as_str(), state.as_str());
    Ok(layout(
        "Jobs",
        Some(&op),
        d.config.read_only,
        html! {
            h1 { (q.as_str()) ": " (state_label(state)) }
            nav.tabs {
                @for s in JobState::ALL {
                    a class=[(s == state).then_some("current")] data-state=(s.as_str())
                        href={ "/admin/queues/" (q.as_str()) "/jobs/" (s.as_str()) } {
                        (state_label(s)) " (" (count(&stats, s)) ")"
                    }
                }
            }
            @if let Some(done) = &query.done { p.notice { (done) } }
            @if state == JobState::Dead {
                form #filter method="get" action=(base) {
                    label { "Error contains " input type="search" name="error" value=[filter]; }
                    " " button type="submit" { "Filter" }
                    " (ignoring case; looks at the newest " (actions::RETRY_ALL_SCAN) " dead jobs)"
                }
                @if !rows.is_empty() && !d.config.read_only {
                    p {
                        a.button #retry-all href={
                            (base) "/bulk?action=retry&all=1"
                            @if let Some(f) = filter { "&error=" (urlencoding(f)) }
                        } {
                            "Retry all " @if filter.is_some() { (rows.len()) " that match" } @else { "dead jobs" }
                        }
                    }
                }
            }
            @if rows.is_empty() {
                @match filter {
                    Some(f) => p #no-match { "No dead job matches “" (f) "”; " (count(&stats, state)) " dead jobs in all." },
                    None => p { "No job here." },
                }
            } @else if offered.is_empty() {
                (jobs_table(&rows, false))
            } @else {
                form #bulk method="get" action={ (base) "/bulk" } {
                    p.bulk {
                        "With the selected jobs: "
                        @for a in offered {
                            button class=[a.dangerous().then_some("danger")] type="submit" name="action" value=(a.slug()) { (a.label()) }
                            " "
                        }
                    }
                    (jobs_table(&rows, true))
                }
            }
            @if let Some(next) = &next {
                p { a.button rel="next" href={ (base) "?cursor=" (urlencoding(next)) } { "Older" } }
            }
        },
    ))
}
