//! Search: a job by its id, by the application token (whole, or the cut
//! form that job pages show, when only one application's token starts
//! that way) with a chat and message number, by error text (ignoring
//! case) or by trace id, through the queue's bounded search: it reads at
//! most [`SEARCH_SCAN`] of the newest records of each state, and says so
//! on the page, so no search ever loads the whole history. A search the
//! dashboard cannot run is answered with the form, filled in, and what to
//! correct.
use axum::{
    Extension,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chat_queue::{JobSearch, QueueName, Resource};
use chat_store::{model::ApplicationView, repo::applications};
use maud::{Markup, html};
use serde::Deserialize;

use crate::{
    Dashboard,
    auth::Operator,
    error::DashError,
    jobs::{self, Row},
    pages::layout,
    queue_named,
};

/// Newest records per state and queue that one search reads.
pub(crate) const SEARCH_SCAN: usize = 10_000;
/// Matches one search shows.
const SEARCH_LIMIT: usize = 100;
/// The shortest cut token searched by prefix: the dashboard shows four.
const MIN_PREFIX: usize = 4;

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

/// The application a token names: whole, or cut (`d5US…`) when exactly
/// one application's token starts that way.
async fn application(d: &Dashboard, token: &str) -> Result<ApplicationView, DashError> {
    if let Some(app) = applications::find_by_token(&d.deps.db, token).await? {
        return Ok(app);
    }
    let prefix = token.trim_end_matches('…').trim_end_matches("...");
    if prefix.chars().count() < MIN_PREFIX {
        return Err(DashError::NotFound(
            "application with that token (give at least its first 4 characters)",
        ));
    }
    let mut found = applications::find_by_token_prefix(&d.deps.db, prefix, 2).await?;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(DashError::NotFound(
            "application whose token starts that way",
        )),
        _ => Err(DashError::BadRequest(format!(
            "more than one application's token starts with “{prefix}”: give more of it"
        ))),
    }
}

/// Runs the search the form describes over the chosen queues.
async fn run(d: &Dashboard, form: &SearchForm) -> Result<Vec<Row>, DashError> {
    let queues: Vec<QueueName> = match given(&form.queue) {
        Some(name) => vec![queue_named(name)?],
        None => QueueName::ALL.to_vec(),
    };
    let chat = number(&form.chat, "chat")?;
    let message = number(&form.message, "message")?;
    let app = match given(&form.token) {
        Some(token) => Some(application(d, token).await?.id),
        None if chat.is_some() || message.is_some() => {
            return Err(DashError::BadRequest(
                "a chat or message number needs the application token".into(),
            ));
        }
        None => None,
    };
    let trace = given(&form.trace).map(|t| t.to_ascii_lowercase());
    let names = app.map(|application_id| Resource {
        application_id,
        chat,
        message,
    });
    let mut found = Vec::new();
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
            .deps
            .queue
            .search(q, &search, SEARCH_SCAN, SEARCH_LIMIT)
            .await?;
        found.extend(jobs.into_iter().map(|j| (q, j)));
    }
    jobs::rows(d, found).await
}

fn search_page(
    d: &Dashboard,
    op: &Operator,
    form: &SearchForm,
    problem: Option<&str>,
    found: Option<&[Row]>,
) -> Markup {
    layout(
        "Search",
        Some(op),
        d.config.read_only,
        html! {
            h1 { "Search jobs" }
            @if let Some(problem) = problem { p.error #search-error { (problem) } }
            (search_form(form))
            @if let Some(found) = found {
                p.scope { "Looked at the newest " (SEARCH_SCAN) " records of each state; showing up to " (SEARCH_LIMIT) " matches." }
                @if found.is_empty() {
                    p #no-match { "No job matches." }
                } @else {
                    (jobs::jobs_table(found, false))
                }
            }
        },
    )
}

/// The search form, filled with what was asked.
pub(crate) fn search_form(form: &SearchForm) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
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
            label { "application token (whole, or its first characters) " input type="search" name="token" value=(value(&form.token)); }
            label { " chat " input type="number" name="chat" value=(value(&form.chat)); }
            label { " message " input type="number" name="message" value=(value(&form.message)); }
            br;
            label { "error contains " input type="search" name="error" value=(value(&form.error)); }
            label { " trace id " input type="search" name="trace" value=(value(&form.trace)); }
            " " button type="submit" { "Search" }
        }
    }
}

pub(crate) async fn search(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Query(form): Query<SearchForm>,
) -> Result<Response, DashError> {
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
    if !asked {
        return Ok(search_page(&d, &op, &form, None, None).into_response());
    }
    match run(&d, &form).await {
        Ok(found) => Ok(search_page(&d, &op, &form, None, Some(&found)).into_response()),
        Err(e @ (DashError::BadRequest(_) | DashError::NotFound(_))) => {
            let status = match e {
                DashError::NotFound(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            };
            let page = search_page(&d, &op, &form, Some(&e.detail()), None);
            Ok((status, page).into_response())
        }
        Err(e) => Err(e),
    }
}
