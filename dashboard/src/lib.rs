//! The operators' dashboard, served at `/admin` on the API's port.
//!
//! Owns the pages (server-rendered with maud, working without
//! JavaScript except for the live refresh), their JSON twins under
//! `/admin/api`, the login and session cookie, CSRF checks, the actions
//! on dead jobs and their audit trail. Every route but the login form
//! requires the admin token (see [`auth`]).
//!
//! It must not know how jobs are processed: it reads and repairs queue
//! state through `chat-queue`'s `JobHistory` only (in its
//! [`DashboardDeps`]), and a retried job runs through the same pipeline
//! as any other.
//!
//! # Layout
//! - [`auth`]: the token, the signed session cookie and its revocation,
//!   CSRF tokens, where a login may send the browser back to.
//! - `attempts`: wrong tokens counted per client address, and refused
//!   past a limit.
//! - `login`: the login form, the `?token=` link, logging out.
//! - `overview`: backends, alerts, queues with their pause switch,
//!   charts, lags, workers; the page and its live fragment.
//! - `chart`: the throughput chart as SVG.
//! - `figures`: throughput, percentiles, write lags and workers, from
//!   the figures the workers keep.
//! - `jobs`: job lists by state (the dead tab is the dead list), with the
//!   key fields of each job and the bulk selection.
//! - `job_page`: one job, its attempts, trace and actions.
//! - `search`: jobs by id, token, chat and message, error or trace.
//! - `action`: what retry, discard, retry now and cancel do to one job.
//! - `actions`: their forms, for one job or many; each confirmed, audited
//!   per job.
//! - `pausing`: pausing and resuming a queue's workers.
//! - `payload`: payloads as operators see them, naming the application
//!   instead of its internal id.
//! - [`scheduler`]: the periodic tasks' runs and next ticks, and the data
//!   health that the count and search checks report.
//! - `pages`: the frame, the error page, the audit trail.
//! - `api`: JSON for tools.
//! - [`error`]: problem+json errors, and their HTML form on pages.
use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, RawQuery},
    middleware,
    response::Redirect,
    routing::{get, post},
};
use chat_queue::QueueName;
pub use deps::DashboardDeps;

mod action;
mod actions;
mod api;
mod attempts;
pub mod auth;
mod chart;
mod deps;
pub mod error;
mod figures;
mod job_page;
mod jobs;
mod login;
mod overview;
mod pages;
mod pausing;
mod payload;
pub mod scheduler;
mod search;

use error::DashError;

/// How the dashboard runs: from `ADMIN_TOKEN`, `DASHBOARD_READ_ONLY` and
/// `JAEGER_UI_URL`.
#[derive(Clone, Debug)]
pub struct DashboardConfig {
    /// The one secret that opens the dashboard.
    pub token: String,
    /// Hides and refuses every action.
    pub read_only: bool,
    /// Where a job's trace id links to; no link when unset.
    pub jaeger_ui_url: Option<String>,
    /// The scheduler's tasks and intervals, to say when each is next due.
    pub schedules: Vec<scheduler::Schedule>,
    /// Wrong tokens an address may present per 15 minutes before it is
    /// refused; 0 turns the limit off.
    pub login_failures: u32,
    /// Take the client address from `X-Forwarded-For` (behind a proxy).
    pub trust_forwarded_for: bool,
    /// Take the scheme from `X-Forwarded-Proto` (behind a proxy that ends
    /// TLS): the session cookie is `Secure` only over HTTPS.
    pub trust_forwarded_proto: bool,
}

#[derive(Clone)]
pub(crate) struct Dashboard {
    deps: DashboardDeps,
    config: Arc<DashboardConfig>,
    attempts: Arc<attempts::FailedAttempts>,
}

pub(crate) fn queue_named(name: &str) -> Result<QueueName, DashError> {
    QueueName::ALL
        .into_iter()
        .find(|q| q.as_str() == name)
        .ok_or(DashError::NotFound("queue"))
}

pub fn router(deps: DashboardDeps, config: DashboardConfig) -> Router {
    let dashboard = Dashboard {
        deps,
        attempts: Arc::new(attempts::FailedAttempts::new(config.login_failures)),
        config: Arc::new(config),
    };
    let protected = Router::new()
        .route("/admin", get(overview::page))
        .route("/admin/", get(|| async { Redirect::to("/admin") }))
        .route("/admin/live/overview", get(overview::live))
        .route("/admin/audit", get(pages::audit_page))
        .route("/admin/scheduler", get(scheduler::scheduler_page))
        .route("/admin/health", get(scheduler::health_page))
        .route("/admin/search", get(search::search))
        .route("/admin/queues/{queue}/pause", post(pausing::pause))
        .route("/admin/queues/{queue}/resume", post(pausing::resume))
        .route("/admin/queues/{queue}/jobs/{state}", get(jobs::list))
        .route(
            "/admin/queues/{queue}/jobs/{state}/bulk",
            get(actions::confirm_bulk).post(actions::act_bulk),
        )
        .route(
            "/admin/queues/{queue}/jobs/{state}/{id}",
            get(job_page::detail),
        )
        .route(
            "/admin/queues/{queue}/jobs/{state}/{id}/{action}",
            get(actions::confirm).post(actions::act),
        )
        // The dead list's old addresses, kept for links and bookmarks.
        .route("/admin/queues/{queue}/dead", get(dead_list))
        .route(
            "/admin/queues/{queue}/dead/retry-all",
            get(actions::confirm_all).post(actions::retry_all),
        )
        .route(
            "/admin/queues/{queue}/dead/{id}",
            get(job_page::dead_detail),
        )
        .route(
            "/admin/queues/{queue}/dead/{id}/{action}",
            get(actions::confirm_dead).post(actions::act_dead),
        )
        .route("/admin/logout", post(login::logout))
        .route("/admin/api/queues", get(api::queues))
        .route("/admin/api/dead", get(api::dead))
        .route("/admin/api/runs", get(api::runs))
        .route("/admin/api/audit", get(api::audit))
        .route("/admin/api/figures", get(figures::figures_json))
        .route("/admin/api/workers", get(figures::workers_json))
        .route("/admin/{*page}", get(not_found))
        .route_layer(middleware::from_fn_with_state(
            dashboard.clone(),
            auth::require,
        ));
    Router::new()
        .route("/admin/login", get(login::form).post(login::submit))
        .merge(protected)
        .layer(middleware::from_fn_with_state(
            dashboard.clone(),
            error::as_html,
        ))
        .with_state(dashboard)
}

/// The dead list lives on the dead tab now.
async fn dead_list(Path(queue): Path<String>, RawQuery(query): RawQuery) -> Redirect {
    let queue = form_urlencoded::byte_serialize(queue.as_bytes()).collect::<String>();
    match query {
        Some(query) => Redirect::to(&format!("/admin/queues/{queue}/jobs/dead?{query}")),
        None => Redirect::to(&format!("/admin/queues/{queue}/jobs/dead")),
    }
}

async fn not_found() -> DashError {
    DashError::NotFound("page")
}
