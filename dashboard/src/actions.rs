//! The operators' actions on jobs: retry or discard a dead job, run a job
//! that waits for its retry now, cancel a pending or retrying job; one at
//! a time from a job's page, or many, selected on a list or all that
//! match the dead list's filter. Each is a GET that shows a confirmation
//! form stating what and how many (so it works with JavaScript off) and a
//! POST that checks the CSRF token, acts, records every job it touched in
//! the audit trail, and redirects back. `DASHBOARD_READ_ONLY` refuses both.
//!
//! What each action does to one job is [`crate::action`]; this module is
//! the forms around them.
use axum::{
    Extension,
    extract::{Path, RawQuery, State},
    response::{IntoResponse, Redirect, Response},
};
use chat_ops::audit::{self, JobRef};
use chat_queue::{DeadJob, JobState, QueueName, contains_folded};
use maud::html;

pub(crate) use crate::action::Action;
use crate::{
    Dashboard, action::Touched, auth::Operator, error::DashError, pages::layout, queue_named,
};

/// Most dead jobs one "retry all" looks at: the newest ones, a bounded scan.
mod trail;

use trail::record;

pub(crate) const RETRY_ALL_SCAN: usize = 1000;
/// Job ids a bulk action's audit summary lists before it says "and N more".
const IDS_IN_SUMMARY: usize = 50;
/// Job ids a confirmation page lists.
const IDS_SHOWN: usize = 20;

fn writable(d: &Dashboard) -> Result<(), DashError> {
    if d.config.read_only {
        return Err(DashError::ReadOnly);
    }
    Ok(())
}

/// A posted action form, once the dashboard may act and the form's CSRF
/// token is the session's.
pub(crate) fn posted(d: &Dashboard, op: &Operator, body: &[u8]) -> Result<Fields, DashError> {
    writable(d)?;
    let f = Fields::parse(body);
    crate::auth::check_csrf(op, f.csrf.as_deref())?;
    Ok(f)
}

/// A form or query string, with its repeated `id` fields kept.
#[derive(Default)]
pub(crate) struct Fields {
    ids: Vec<String>,
    action: Option<String>,
    csrf: Option<String>,
    /// The dead list's error filter.
    error: Option<String>,
    /// Every job that matches the filter, not only the ones selected.
    all: bool,
}

impl Fields {
    fn parse(raw: &[u8]) -> Self {
        let mut f = Fields::default();
        for (k, v) in form_urlencoded::parse(raw) {
            match &*k {
                "id" if !v.is_empty() => f.ids.push(v.into_owned()),
                "action" => f.action = Some(v.into_owned()),
                "csrf" => f.csrf = Some(v.into_owned()),
                "error" if !v.is_empty() => f.error = Some(v.into_owned()),
                "all" => f.all = matches!(&*v, "1" | "on" | "true"),
                _ => {}
            }
        }
        f.ids.dedup();
        f
    }

    fn action(&self) -> Result<Action, DashError> {
        Action::named(self.action.as_deref().unwrap_or(""))
    }
}

/// The newest dead jobs (a bounded scan) with a failure whose error
/// contains `filter`, ignoring case: what the dead list shows when
/// filtered and "retry all" acts on.
pub(crate) async fn matching(
    d: &Dashboard,
    q: QueueName,
    filter: Option<&str>,
) -> Result<Vec<DeadJob>, DashError> {
    let jobs = d.deps.queue.dead_jobs(q, RETRY_ALL_SCAN).await?;
    Ok(jobs
        .into_iter()
        .filter(|j| filter.is_none_or(|f| j.failures.iter().any(|x| contains_folded(&x.error, f))))
        .collect())
}

/// The jobs a bulk request names: its selection, or every dead job that
/// matches its filter.
async fn targets(
    d: &Dashboard,
    q: QueueName,
    state: JobState,
    f: &Fields,
) -> Result<Vec<String>, DashError> {
    if f.all {
        if state != JobState::Dead {
            return Err(DashError::BadRequest(
                "\"all that match\" applies to the dead list's filter only; select jobs instead"
                    .into(),
            ));
        }
        return Ok(matching(d, q, f.error.as_deref())
            .await?
            .into_iter()
            .map(|j| j.id)
            .collect());
    }
    if f.ids.is_empty() {
        return Err(DashError::BadRequest(
            "select at least one job, or all that match".into(),
        ));
    }
    Ok(f.ids.clone())
}

fn list_url(q: QueueName, state: JobState) -> String {
    format!("/admin/queues/{}/jobs/{}", q.as_str(), state.as_str())
}

fn allowed(action: Action, state: JobState) -> Result<(), DashError> {
    if Action::for_state(state).contains(&action) {
        Ok(())
    } else {
        Err(DashError::BadRequest(format!(
            "a job that is {} cannot be given \"{}\"",
            crate::jobs::state_label(state),
            action.label()
        )))
    }
}

fn parse_target(queue: &str, state: &str) -> Result<(QueueName, JobState), DashError> {
    Ok((queue_named(queue)?, crate::jobs::state_named(state)?))
}

/// The confirmation form: the question, the jobs (some of them, when many)
/// and the fields the POST needs.
fn confirm_page(
    op: &Operator,
    action: Action,
    question: &str,
    target: &str,
    ids: &[String],
    f: &Fields,
) -> Response {
    layout(
        action.label(),
        Some(op),
        false,
        html! {
            h1 { (action.label()) }
            p #question { (question) }
            @if ids.len() > 1 {
                ul.ids {
                    @for id in ids.iter().take(IDS_SHOWN) { li { code { (id) } } }
                    @if ids.len() > IDS_SHOWN { li { "and " (ids.len() - IDS_SHOWN) " more" } }
                }
            }
            form #confirm method="post" action=(target) {
                @if let Some(csrf) = &op.csrf { input type="hidden" name="csrf" value=(csrf); }
                input type="hidden" name="action" value=(action.slug());
                @if f.all {
                    input type="hidden" name="all" value="1";
                    @if let Some(error) = &f.error { input type="hidden" name="error" value=(error); }
                } @else {
                    @for id in ids { input type="hidden" name="id" value=(id); }
                }
                button class=[action.dangerous().then_some("danger")] type="submit" { "Confirm" }
                " "
                a href="javascript:history.back()" { "Cancel" }
            }
        },
    )
    .into_response()
}

fn back(url: &str, notice: &str) -> Response {
    Redirect::to(&format!("{url}?done={}", urlencoding(notice))).into_response()
}

/// GET: confirm one job's action.
pub(crate) async fn confirm(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path((queue, state, id, action)): Path<(String, String, String, String)>,
) -> Result<Response, DashError> {
    writable(&d)?;
    let (q, state) = parse_target(&queue, &state)?;
    let action = Action::named(&action)?;
    allowed(action, state)?;
    d.deps
        .queue
        .job(q, state, &id)
        .await?
        .ok_or(DashError::NotFound(
            "job in that state (it may have moved on)",
        ))?;
    let target = format!(
        "/admin/queues/{}/jobs/{}/{}/{}",
        q.as_str(),
        state.as_str(),
        urlencoding(&id),
        action.slug()
    );
    let question = action
        .question(1, q, state)
        .replacen("1 job", &format!("job {id}"), 1);
    Ok(confirm_page(
        &op,
        action,
        &question,
        &target,
        &[id],
        &Fields::default(),
    ))
}

/// POST: one job's action.
pub(crate) async fn act(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path((queue, state, id, action)): Path<(String, String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, DashError> {
    posted(&d, &op, &body)?;
    let (q, state) = parse_target(&queue, &state)?;
    let action = Action::named(&action)?;
    allowed(action, state)?;
    let Some(touched) = action.apply(&d, q, state, &id).await? else {
        return Err(DashError::NotFound(
            "job in that state (it may have moved on)",
        ));
    };
    record(&d, &op, action, q, &[touched], None).await?;
    let notice = match action {
        Action::Retry => format!("Job {id} is back in its queue."),
        Action::Discard => format!("Job {id} was discarded."),
        Action::RetryNow => format!("Job {id} is due now."),
        Action::Cancel => format!("Job {id} was cancelled."),
    };
    Ok(back(&list_url(q, state), &notice))
}

/// GET: confirm an action on the jobs selected on a list, or on all that
/// match its filter.
pub(crate) async fn confirm_bulk(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path((queue, state)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, DashError> {
    writable(&d)?;
    let (q, state) = parse_target(&queue, &state)?;
    let f = Fields::parse(query.unwrap_or_default().as_bytes());
    let action = f.action()?;
    allowed(action, state)?;
    let ids = targets(&d, q, state, &f).await?;
    let mut question = action.question(ids.len(), q, state);
    if let Some(error) = f.error.as_deref().filter(|_| f.all) {
        question = format!("{question} (all whose errors contain “{error}”)");
    }
    let target = format!("{}/bulk", list_url(q, state));
    Ok(confirm_page(&op, action, &question, &target, &ids, &f))
}

/// POST: the bulk action. Jobs that moved on since the page was drawn are
/// left alone and not counted.
pub(crate) async fn act_bulk(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path((queue, state)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, DashError> {
    let f = posted(&d, &op, &body)?;
    let (q, state) = parse_target(&queue, &state)?;
    let action = f.action()?;
    allowed(action, state)?;
    let mut done = Vec::new();
    for id in targets(&d, q, state, &f).await? {
        if let Some(touched) = action.apply(&d, q, state, &id).await? {
            done.push(touched);
        }
    }
    record(&d, &op, action, q, &done, Some(&f)).await?;
    Ok(back(&list_url(q, state), &action.outcome(done.len())))
}

/// The dead list's "retry all", kept at its old address.
pub(crate) async fn confirm_all(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path(queue): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, DashError> {
    let query = format!("{}&action=retry&all=1", query.unwrap_or_default());
    confirm_bulk(
        State(d),
        Extension(op),
        Path((queue, "dead".into())),
        RawQuery(Some(query)),
    )
    .await
}

pub(crate) async fn retry_all(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path(queue): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, DashError> {
    let mut body = body.to_vec();
    body.extend_from_slice(b"&action=retry&all=1");
    act_bulk(
        State(d),
        Extension(op),
        Path((queue, "dead".into())),
        body.into(),
    )
    .await
}

/// A dead job's action, kept at its old address.
pub(crate) async fn confirm_dead(
    state: State<Dashboard>,
    op: Extension<Operator>,
    Path((queue, id, action)): Path<(String, String, String)>,
) -> Result<Response, DashError> {
    confirm(state, op, Path((queue, "dead".into(), id, action))).await
}

pub(crate) async fn act_dead(
    state: State<Dashboard>,
    op: Extension<Operator>,
    Path((queue, id, action)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, DashError> {
    act(state, op, Path((queue, "dead".into(), id, action)), body).await
}

pub(crate) fn urlencoding(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests;
