//! Job lists by queue and state, a job's detail in any state, and search.
//!
//! Lists are paged by cursor, newest first. A search looks a job up by
//! its id, by the application token with a chat and message number, by
//! error text or by trace id, through the queue's bounded search: it reads
//! at most [`SEARCH_SCAN`] of the newest records of each state, and says
//! so on the page, so no search ever loads the whole history.
use axum::{
    Extension,
    extract::{Path, Query, State},
};
use chat_store::{
    queue::{JobRecord, JobSearch, JobState, QueueName, Resource},
    repo::{applications, audit},
};
use maud::{Markup, html};
use serde::Deserialize;

use crate::{
    Dashboard,
    auth::Operator,
    error::DashError,
    pages::{audit_table, job_type, layout, previews, trace_id, when},
    payload, queue_named,
};

/// Jobs per list page.
const PAGE: usize = 50;
/// Newest records per state and queue that one search reads.
pub(crate) const SEARCH_SCAN: usize = 10_000;
/// Matches one search shows.
const SEARCH_LIMIT: usize = 100;

fn state_named(name: &str) -> Result<JobState, DashError> {
    JobState::parse(name).ok_or(DashError::NotFound("job state"))
}

fn state_label(s: JobState) -> &'static str {
    match s {
        JobState::Pending => "pending",
        JobState::InFlight => "in flight",
        JobState::Retrying => "scheduled for retry",
        JobState::Done => "done",
        JobState::Dead => "dead",
    }
}

/// What the time of a record means in its state.
fn at_label(s: JobState) -> &'static str {
    match s {
        JobState::Pending | JobState::InFlight => "ready since",
        JobState::Retrying => "due",
        JobState::Done => "done at",
        JobState::Dead => "buried",
    }
}

/// A duration in ms as the page shows it.
fn ms(ms: i64) -> String {
    if ms < 10_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1_000.0)
    }
}

fn detail_href(q: QueueName, job: &JobRecord) -> String {
    let id = form_urlencoded::byte_serialize(job.id.as_bytes()).collect::<String>();
    match job.state {
        JobState::Dead => format!("/admin/queues/{}/dead/{id}", q.as_str()),
        s => format!("/admin/queues/{}/jobs/{}/{id}", q.as_str(), s.as_str()),
    }
}

fn jobs_table(rows: &[(QueueName, JobRecord)]) -> Markup {
    html! {
        table #jobs {
            thead { tr { th { "queue" } th { "job" } th { "state" } th { "when" } th { "attempt" } th { "worker" } th { "last error" } } }
            tbody {
                @for (q, job) in rows {
                    tr data-job=(job.job_id) {
                        td { (q.as_str()) }
                        td { a href=(detail_href(*q, job)) { (job.job_id) } }
                        td { (state_label(job.state)) }
                        td { (at_label(job.state)) " " (when(job.at)) }
                        td { (job.attempt) }
                        td { (job.worker.as_deref().unwrap_or("")) }
                        td.error { (job.failures.last().map(|f| f.error.as_str()).unwrap_or("")) }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    cursor: Option<String>,
}

pub(crate) async fn list(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path((queue, state)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Result<Markup, DashError> {
    let q = queue_named(&queue)?;
    let state = state_named(&state)?;
    let page = d
        .backends
        .queue
        .jobs(q, state, query.cursor.as_deref(), PAGE)
        .await?;
    let rows: Vec<_> = page.jobs.into_iter().map(|j| (q, j)).collect();
    Ok(layout(
        "Jobs",
        Some(&op),
        d.config.read_only,
        html! {
            h1 { (q.as_str()) ": " (state_label(state)) }
            nav.tabs {
                @for s in JobState::ALL {
                    a class=[(s == state).then_some("current")] href={ "/admin/queues/" (q.as_str()) "/jobs/" (s.as_str()) } { (state_label(s)) }
                }
            }
            @if rows.is_empty() {
                p { "No job here." }
            } @else {
                (jobs_table(&rows))
            }
            @if let Some(next) = &page.next {
                p { a.button rel="next" href={ "/admin/queues/" (q.as_str()) "/jobs/" (state.as_str()) "?cursor=" (form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()) } { "Older" } }
            }
        },
    ))
}

pub(crate) async fn detail(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path((queue, state, id)): Path<(String, String, String)>,
) -> Result<Markup, DashError> {
    let q = queue_named(&queue)?;
    let state = state_named(&state)?;
    let job = d
        .backends
        .queue
        .job(q, state, &id)
        .await?
        .ok_or(DashError::NotFound(
            "job (it may have moved on to another state)",
        ))?;
    detail_page(&d, &op, q, job).await
}

/// A job's page: its type, state, payload, every failed attempt, its trace
/// and what operators did to it; and, when dead and allowed, the actions.
pub(crate) async fn detail_page(
    d: &Dashboard,
    op: &Operator,
    q: QueueName,
    job: JobRecord,
) -> Result<Markup, DashError> {
    let payload = payload::for_operators(&d.backends, &[&job.payload]).await?;
    let (shown, full) = previews(&payload[0]);
    let trace = job.trace.as_deref().and_then(trace_id);
    let actions = audit::for_job(&d.backends.db, q.as_str(), &job.id).await?;
    let base = format!("/admin/queues/{}/dead/{}", q.as_str(), job.id);
    let title = if job.state == JobState::Dead {
        "Dead job"
    } else {
        "Job"
    };
    Ok(layout(
        title,
        Some(op),
        d.config.read_only,
        html! {
            h1 { (title) " " (job.id) }
            dl {
                dt { "type" } dd { (job_type(q)) }
                dt { "queue" } dd { (q.as_str()) }
                dt { "state" } dd #state { (state_label(job.state)) }
                dt { "job id" } dd { (job.job_id) }
                @if let Some(at) = job.enqueued_at {
                    dt { "enqueued" } dd #enqueued { (when(at)) }
                }
                @if let Some(at) = job.ready_at.filter(|_| job.state != JobState::Retrying) {
                    dt { "ready since" } dd { (when(at)) }
                }
                @if let Some(started) = job.started_at {
                    dt { "started" } dd { (when(started)) }
                    @if let Some(ready) = job.ready_at {
                        dt { "waited" } dd #wait { (ms((started - ready).max(0))) }
                    }
                    @if job.state == JobState::Done {
                        dt { "ran for" } dd #ran { (ms((job.at - started).max(0))) }
                    }
                }
                @if !matches!(job.state, JobState::Pending | JobState::InFlight) {
                    dt { (at_label(job.state)) } dd { (when(job.at)) }
                }
                dt { "attempts" } dd { (job.attempt) }
                @if let Some(worker) = &job.worker {
                    dt { @if job.state == JobState::InFlight { "held by" } @else { "worker" } }
                    dd #worker { (worker) }
                }
                @if let Some(trace) = trace {
                    dt { "trace" }
                    dd {
                        @match &d.config.jaeger_ui_url {
                            Some(jaeger) => a.trace href={ (jaeger.trim_end_matches('/')) "/trace/" (trace) } { (trace) },
                            None => code { (trace) },
                        }
                    }
                }
            }
            @if job.state == JobState::Dead && !d.config.read_only {
                p.actions {
                    a.button href={ (base) "/retry" } { "Retry" }
                    " "
                    a.button.danger href={ (base) "/discard" } { "Discard" }
                }
            }
            h2 { "Payload" }
            pre.payload { (shown) }
            @if let Some(full) = &full {
                details { summary { "Show the full payload" } pre.payload { (full) } }
            }
            h2 { "Failed attempts" }
            @if job.failures.is_empty() {
                p { "None." }
            } @else {
                table {
                    thead { tr { th { "attempt" } th { "failed at" } th { "ran for" } th { "worker" } th { "error" } } }
                    tbody {
                        @for f in &job.failures {
                            tr {
                                td { (f.attempt) }
                                td { (f.at.format("%Y-%m-%d %H:%M:%S%.3f UTC")) }
                                td { (f.ms.map(|m| ms(m as i64)).unwrap_or_default()) }
                                td { (f.worker.as_deref().unwrap_or("")) }
                                td.error { (f.error) }
                            }
                        }
                    }
                }
            }
            h2 { "Operator actions" }
            (audit_table("job-audit", &actions))
        },
    ))
}

#[derive(Deserialize, Default)]
pub(crate) struct SearchForm {
    queue: Option<String>,
    job_id: Option<String>,
    token: Option<String>,
    chat: Option<String>,
    message: Option<String>,
    error: Option<String>,
    trace: Option<String>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn number(v: &Option<String>, what: &str) -> Result<Option<i64>, DashError> {
    given(v)
        .map(|n| {
            n.parse::<i64>()
                .map_err(|_| DashError::BadRequest(format!("{what} must be a whole number")))
        })
        .transpose()
}

/// Runs the search the form describes over the chosen queues.
async fn run_search(
    d: &Dashboard,
    form: &SearchForm,
) -> Result<Vec<(QueueName, JobRecord)>, DashError> {
    let queues: Vec<QueueName> = match given(&form.queue) {
        Some(name) => vec![queue_named(name)?],
        None => QueueName::ALL.to_vec(),
    };
    let chat = number(&form.chat, "chat")?;
    let message = number(&form.message, "message")?;
    let app = match given(&form.token) {
        Some(token) => Some(
            applications::find_by_token(&d.backends.db, token)
                .await?
                .ok_or(DashError::NotFound("application with that token"))?
                .id,
        ),
        None if chat.is_some() || message.is_some() => {
            return Err(DashError::BadRequest(
                "a chat or message number needs the application token".into(),
            ));
        }
        None => None,
    };
    let trace = given(&form.trace).map(|t| t.to_ascii_lowercase());
    let mut found = Vec::new();
    let names = app.map(|application_id| Resource {
        application_id,
        chat,
        message,
    });
    for q in queues {
        if q == QueueName::Chats && message.is_some() {
            // A chat job never names a message.
            continue;
        }
        let search = JobSearch {
            job_id: given(&form.job_id).map(str::to_owned),
            names,
            error: given(&form.error).map(str::to_owned),
            trace: trace.clone(),
        };
        let jobs = d
            .backends
            .queue
            .search(q, &search, SEARCH_SCAN, SEARCH_LIMIT)
            .await?;
        found.extend(jobs.into_iter().map(|j| (q, j)));
    }
    Ok(found)
}

pub(crate) async fn search(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Query(form): Query<SearchForm>,
) -> Result<Markup, DashError> {
    let asked = [
        &form.job_id,
        &form.token,
        &form.error,
        &form.trace,
        &form.chat,
        &form.message,
    ]
    .into_iter()
    .any(|v| given(v).is_some());
    let found = if asked {
        Some(run_search(&d, &form).await?)
    } else {
        None
    };
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    Ok(layout(
        "Search",
        Some(&op),
        d.config.read_only,
        html! {
            h1 { "Search jobs" }
            form #search method="get" action="/admin/search" {
                label { "queue "
                    select name="queue" {
                        option value="" { "all" }
                        @for q in QueueName::ALL {
                            option value=(q.as_str()) selected[given(&form.queue) == Some(q.as_str())] { (q.as_str()) }
                        }
                    }
                }
                label { " job id " input type="search" name="job_id" value=(value(&form.job_id)); }
                br;
                label { "application token " input type="search" name="token" value=(value(&form.token)); }
                label { " chat " input type="number" name="chat" value=(value(&form.chat)); }
                label { " message " input type="number" name="message" value=(value(&form.message)); }
                br;
                label { "error contains " input type="search" name="error" value=(value(&form.error)); }
                label { " trace id " input type="search" name="trace" value=(value(&form.trace)); }
                " " button type="submit" { "Search" }
            }
            @if let Some(found) = &found {
                p.scope { "Looked at the newest " (SEARCH_SCAN) " records of each state; showing up to " (SEARCH_LIMIT) " matches." }
                @if found.is_empty() {
                    p #no-match { "No job matches." }
                } @else {
                    (jobs_table(found))
                }
            }
        },
    ))
}
