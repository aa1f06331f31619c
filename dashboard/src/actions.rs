//! The operators' actions on dead jobs: retry one, retry all that match
//! the list's filter, discard one. Each is a GET that shows a
//! confirmation form (so it works with JavaScript off) and a POST that
//! checks the CSRF token, acts, leaves an audit record and redirects.
//! `DASHBOARD_READ_ONLY` refuses both.
//!
//! A retry revives the dead job in place: it keeps its payload, trace
//! context and failure history and runs through the normal pipeline, where
//! the version-guarded upsert makes a repeated row a no-op.
use axum::{
    Extension, Form,
    extract::{Path, Query, State},
    response::{IntoResponse, Redirect, Response},
};
use chat_store::repo::audit;
use maud::html;
use serde::Deserialize;

use crate::{
    Dashboard,
    auth::{Operator, check_csrf},
    error::DashError,
    pages::layout,
    queue_named,
};

/// Most dead jobs one "retry all" looks at: the newest ones, a bounded scan.
pub(crate) const RETRY_ALL_SCAN: usize = 1000;

#[derive(Clone, Copy)]
enum Action {
    Retry,
    Discard,
}

fn action_named(name: &str) -> Result<Action, DashError> {
    match name {
        "retry" => Ok(Action::Retry),
        "discard" => Ok(Action::Discard),
        _ => Err(DashError::NotFound("action")),
    }
}

fn writable(d: &Dashboard) -> Result<(), DashError> {
    if d.config.read_only {
        return Err(DashError::ReadOnly);
    }
    Ok(())
}

#[derive(Deserialize)]
pub(crate) struct ActionForm {
    csrf: Option<String>,
    /// For "retry all": the error text the list was filtered by.
    error: Option<String>,
}

fn confirm_page(
    op: &Operator,
    title: &str,
    question: &str,
    action: &str,
    filter: Option<&str>,
) -> Response {
    layout(
        title,
        Some(op),
        false,
        html! {
            h1 { (title) }
            p { (question) }
            form #confirm method="post" action=(action) {
                @if let Some(csrf) = &op.csrf { input type="hidden" name="csrf" value=(csrf); }
                @if let Some(filter) = filter { input type="hidden" name="error" value=(filter); }
                button.danger type="submit" { "Confirm" }
                " "
                a href="javascript:history.back()" { "Cancel" }
            }
        },
    )
    .into_response()
}

pub(crate) async fn confirm(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path((queue, id, action)): Path<(String, String, String)>,
) -> Result<Response, DashError> {
    writable(&d)?;
    let q = queue_named(&queue)?;
    let action = action_named(&action)?;
    d.backends
        .queue
        .dead_job(q, &id)
        .await?
        .ok_or(DashError::NotFound("dead job"))?;
    let (title, question) = match action {
        Action::Retry => (
            "Retry job",
            format!("Put dead job {id} of {} back in its queue?", q.as_str()),
        ),
        Action::Discard => (
            "Discard job",
            format!("Delete dead job {id} of {} for good?", q.as_str()),
        ),
    };
    let target = format!(
        "/admin/queues/{}/dead/{id}/{}",
        q.as_str(),
        match action {
            Action::Retry => "retry",
            Action::Discard => "discard",
        }
    );
    Ok(confirm_page(&op, title, &question, &target, None))
}

pub(crate) async fn act(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path((queue, id, action)): Path<(String, String, String)>,
    Form(form): Form<ActionForm>,
) -> Result<Response, DashError> {
    writable(&d)?;
    check_csrf(&op, form.csrf.as_deref())?;
    let q = queue_named(&queue)?;
    let action = action_named(&action)?;
    let (done, verb) = match action {
        Action::Retry => (d.backends.queue.revive(q, &id).await?, "retry"),
        Action::Discard => (d.backends.queue.discard(q, &id).await?, "discard"),
    };
    if !done {
        return Err(DashError::NotFound("dead job"));
    }
    audit::record(&d.backends.db, &op.name, verb, q.as_str(), Some(&id), None).await?;
    let notice = match action {
        Action::Retry => format!("Job {id} is back in its queue."),
        Action::Discard => format!("Job {id} was discarded."),
    };
    Ok(Redirect::to(&format!(
        "/admin/queues/{}/dead?done={}",
        q.as_str(),
        urlencoding(&notice)
    ))
    .into_response())
}

#[derive(Deserialize)]
pub(crate) struct Filter {
    error: Option<String>,
}

/// The newest dead jobs (a bounded scan) with a failure whose error
/// contains `filter`: what the list shows and "retry all" acts on.
pub(crate) async fn matching(
    d: &Dashboard,
    q: chat_store::queue::QueueName,
    filter: Option<&str>,
) -> Result<Vec<chat_store::queue::DeadJob>, DashError> {
    let jobs = d.backends.queue.dead_jobs(q, RETRY_ALL_SCAN).await?;
    Ok(jobs
        .into_iter()
        .filter(|j| filter.is_none_or(|f| j.failures.iter().any(|x| x.error.contains(f))))
        .collect())
}

pub(crate) async fn confirm_all(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path(queue): Path<String>,
    Query(filter): Query<Filter>,
) -> Result<Response, DashError> {
    writable(&d)?;
    let q = queue_named(&queue)?;
    let filter = filter.error.filter(|f| !f.is_empty());
    let n = matching(&d, q, filter.as_deref()).await?.len();
    let question = match &filter {
        Some(f) => format!(
            "Put the {n} dead jobs of {} whose errors contain “{f}” back in their queue?",
            q.as_str()
        ),
        None => format!(
            "Put all {n} dead jobs of {} back in their queue?",
            q.as_str()
        ),
    };
    let target = format!("/admin/queues/{}/dead/retry-all", q.as_str());
    Ok(confirm_page(
        &op,
        "Retry dead jobs",
        &question,
        &target,
        filter.as_deref(),
    ))
}

pub(crate) async fn retry_all(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path(queue): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, DashError> {
    writable(&d)?;
    check_csrf(&op, form.csrf.as_deref())?;
    let q = queue_named(&queue)?;
    let filter = form.error.filter(|f| !f.is_empty());
    let mut revived = 0;
    for job in matching(&d, q, filter.as_deref()).await? {
        if d.backends.queue.revive(q, &job.id).await? {
            revived += 1;
        }
    }
    let detail = format!(
        "{revived} jobs{}",
        filter
            .as_deref()
            .map(|f| format!(" whose errors contain {f:?}"))
            .unwrap_or_default()
    );
    audit::record(
        &d.backends.db,
        &op.name,
        "retry_all",
        q.as_str(),
        None,
        Some(&detail),
    )
    .await?;
    Ok(Redirect::to(&format!(
        "/admin/queues/{}/dead?done={}",
        q.as_str(),
        urlencoding(&format!("{revived} jobs are back in their queue."))
    ))
    .into_response())
}

fn urlencoding(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
