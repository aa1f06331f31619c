//! The operators' dashboard, served at `/admin` on the API's port.
//!
//! Owns the pages (server-rendered with maud, working without
//! JavaScript except for the live refresh), their JSON twins under
//! `/admin/api`, the login and session cookie, CSRF checks, the actions
//! on dead jobs and their audit trail. Every route but the login form
//! requires the admin token (see [`auth`]).
//!
//! It must not know how jobs are processed: it reads and repairs queue
//! state through `chat-store`'s `JobQueue` only, and a retried job runs
//! through the same pipeline as any other.
//!
//! # Layout
//! - [`auth`]: the token, the signed session cookie, CSRF tokens.
//! - `attempts`: wrong tokens counted per client address, and refused
//!   past a limit.
//! - `login`: the login form and the `?token=` link.
//! - `pages`: overview, dead jobs, audit.
//! - `jobs`: job lists by state, job detail, search.
//! - `figures`: the overview's throughput chart, percentiles, write lags
//!   and workers, from the figures the workers keep.
//! - `actions`: retry, retry all, discard; each confirmed, audited.
//! - `payload`: payloads as operators see them, naming the application
//!   instead of its internal id.
//! - [`scheduler`]: the periodic tasks' runs and next ticks, and the data
//!   health that the count and search checks report.
//! - `api`: JSON for the live refresh and for tools.
//! - [`error`]: problem+json errors.
use std::sync::Arc;

use axum::{
    Router, middleware,
    response::Redirect,
    routing::{get, post},
};
use chat_store::{Backends, queue::QueueName};

mod actions;
mod api;
mod attempts;
pub mod auth;
pub mod error;
mod figures;
mod jobs;
mod login;
mod pages;
mod payload;
pub mod scheduler;

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
    backends: Backends,
    config: Arc<DashboardConfig>,
    attempts: Arc<attempts::FailedAttempts>,
}

pub(crate) fn queue_named(name: &str) -> Result<QueueName, DashError> {
    QueueName::ALL
        .into_iter()
        .find(|q| q.as_str() == name)
        .ok_or(DashError::NotFound("queue"))
}

pub fn router(backends: Backends, config: DashboardConfig) -> Router {
    let dashboard = Dashboard {
        backends,
        attempts: Arc::new(attempts::FailedAttempts::new(config.login_failures)),
        config: Arc::new(config),
    };
    let protected = Router::new()
        .route("/admin", get(pages::overview))
        .route("/admin/", get(|| async { Redirect::to("/admin") }))
        .route("/admin/audit", get(pages::audit_page))
        .route("/admin/scheduler", get(scheduler::scheduler_page))
        .route("/admin/health", get(scheduler::health_page))
        .route("/admin/search", get(jobs::search))
        .route("/admin/queues/{queue}/jobs/{state}", get(jobs::list))
        .route("/admin/queues/{queue}/jobs/{state}/{id}", get(jobs::detail))
        .route("/admin/queues/{queue}/dead", get(pages::dead_list))
        .route(
            "/admin/queues/{queue}/dead/retry-all",
            get(actions::confirm_all).post(actions::retry_all),
        )
        .route("/admin/queues/{queue}/dead/{id}", get(pages::dead_detail))
        .route(
            "/admin/queues/{queue}/dead/{id}/{action}",
            get(actions::confirm).post(actions::act),
        )
        .route("/admin/logout", post(login::logout))
        .route("/admin/api/queues", get(api::queues))
        .route("/admin/api/dead", get(api::dead))
        .route("/admin/api/runs", get(api::runs))
        .route("/admin/api/audit", get(api::audit))
        .route("/admin/api/figures", get(figures::figures_json))
        .route("/admin/api/workers", get(figures::workers_json))
        .route_layer(middleware::from_fn_with_state(
            dashboard.clone(),
            auth::require,
        ));
    Router::new()
        .route("/admin/login", get(login::form).post(login::submit))
        .merge(protected)
        .with_state(dashboard)
}
