//! The server-rendered pages. Every splice is escaped by maud; the only
//! unescaped text is this crate's own CSS and script. Everything works
//! with JavaScript off except the overview's live refresh.
use axum::{
    Extension,
    extract::{Path, Query, State},
};
use chat_store::{
    queue::{DeadJob, QueueName},
    repo::audit,
};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use crate::{Dashboard, auth::Operator, error::DashError, figures, queue_named};

const STYLE: &str = include_str!("assets/dashboard.css");
const SCRIPT: &str = include_str!("assets/live.js");
/// Characters of a message body shown before the "show all" toggle.
const BODY_PREVIEW: usize = 200;

pub(crate) fn layout(
    title: &str,
    operator: Option<&Operator>,
    read_only: bool,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · chat admin" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a.brand href="/admin" { "chat admin" }
                    @if let Some(op) = operator {
                        nav {
                            a href="/admin" { "Overview" }
                            a href="/admin/search" { "Search" }
                            a href="/admin/scheduler" { "Scheduler" }
                            a href="/admin/health" { "Data health" }
                            a href="/admin/audit" { "Audit" }
                        }
                        span.who { "signed in as " (op.name) }
                        form.inline method="post" action="/admin/logout" {
                            button type="submit" { "Log out" }
                        }
                    }
                }
                @if read_only {
                    p.banner { "Read-only: DASHBOARD_READ_ONLY is set, so no action is offered." }
                }
                main { (body) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

pub(crate) async fn overview(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
) -> Result<Markup, DashError> {
    let mut rows = Vec::new();
    for q in QueueName::ALL {
        rows.push((q, d.backends.queue.stats(q).await?));
    }
    let figures = figures::load(&d).await?;
    let workers = figures::worker_list(&d).await?;
    let recent = audit::recent(&d.backends.db, 5).await?;
    let durability = match &d.backends.redis {
        Some(redis) => Some(redis.durability().await.map_err(DashError::from)?),
        None => None,
    };
    let dead_writes: u64 = rows
        .iter()
        .filter(|(q, _)| q.holds_accepted_writes())
        .map(|(_, s)| s.dead)
        .sum();
    let paused: Vec<_> = workers.iter().filter_map(|w| w.paused.as_deref()).collect();
    Ok(layout(
        "Overview",
        Some(&op),
        d.config.read_only,
        html! {
            @if dead_writes > 0 {
                p.alert #dead-alert {
                    (dead_writes) " dead chat and message jobs hold writes that clients were told were accepted, "
                    "and are not in the database. They are kept until you retry or discard them: "
                    a href="/admin/queues/messages/dead" { "dead messages" } ", "
                    a href="/admin/queues/chats/dead" { "dead chats" } "."
                }
            }
            @if let Some(why) = paused.first() {
                p.alert #paused-alert { "Workers are paused, waiting for a backend: " (why) }
            }
            h1 { "Queues" }
            p.live {
                label { input #live-toggle type="checkbox" checked; " live (every 2 s)" }
            }
            table #queues data-live="/admin/api/queues" {
                thead {
                    tr {
                        th rowspan="2" { "queue" } th rowspan="2" { "pending" } th rowspan="2" { "scheduled for retry" }
                        th rowspan="2" { "in flight" } th rowspan="2" { "done" } th rowspan="2" { "dead" }
                        th colspan="2" { "wait, last " (figures::QUANTILE_MINUTES) " min" }
                        th colspan="2" { "run, last " (figures::QUANTILE_MINUTES) " min" }
                        th rowspan="2" { "done ▲ and failed ▼ per minute, last " (figures::CHART_MINUTES) " min" }
                    }
                    tr { th { "p50" } th { "p99" } th { "p50" } th { "p99" } }
                }
                tbody {
                    @for (q, s) in &rows {
                        @let f = figures.queue(*q);
                        tr data-queue=(q.as_str()) {
                            td { a href={ "/admin/queues/" (q.as_str()) "/jobs/done" } { (q.as_str()) } }
                            td data-field="ready" { (s.ready) }
                            td data-field="retrying" { (s.retrying) }
                            td data-field="in_flight" { (s.in_flight) }
                            td data-field="done" { (s.done) }
                            td data-field="dead" { a href={ "/admin/queues/" (q.as_str()) "/dead" } { (s.dead) } }
                            (figures::quantile_cells(&f))
                            td { (figures::chart(&f)) }
                        }
                    }
                }
            }
            h2 { "Write lag" }
            (figures::lags(&figures))
            h2 { "Workers" }
            (figures::workers_table(&workers))
            @if let Some(redis) = &durability {
                h2 { "Redis" }
                table #redis {
                    tbody {
                        tr { th { "append-only file" } td { @if redis.aof { "on" } @else { "off" } } }
                        tr { th { "appendfsync" } td { (redis.fsync.as_deref().unwrap_or("unknown")) } }
                        tr { th { "maxmemory-policy" } td { (redis.eviction) } }
                        tr { th { "a crash loses" } td class=[redis.loses_writes_on_restart().then_some("warn")] { (redis.what_a_crash_loses()) } }
                    }
                }
            }
            h2 { "Recent actions" }
            (audit_table("recent-actions", &recent))
            p { a href="/admin/audit" { "Full audit trail" } }
        },
    ))
}

pub(crate) fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    /// What the last action did, to say so.
    done: Option<String>,
    /// Only jobs with a failure whose error contains this.
    error: Option<String>,
}

pub(crate) async fn dead_list(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path(queue): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Markup, DashError> {
    let q = queue_named(&queue)?;
    let filter = query.error.as_deref().filter(|f| !f.is_empty());
    let jobs = crate::actions::matching(&d, q, filter).await?;
    let retry_all = match filter {
        Some(f) => format!(
            "/admin/queues/{}/dead/retry-all?error={}",
            q.as_str(),
            form_urlencoded::byte_serialize(f.as_bytes()).collect::<String>()
        ),
        None => format!("/admin/queues/{}/dead/retry-all", q.as_str()),
    };
    Ok(layout(
        "Dead jobs",
        Some(&op),
        d.config.read_only,
        html! {
            h1 { "Dead jobs in " (q.as_str()) }
            @if let Some(done) = &query.done { p.notice { (done) } }
            form method="get" {
                label { "Error contains " input type="search" name="error" value=[filter]; }
                " " button type="submit" { "Filter" }
            }
            @if !jobs.is_empty() && !d.config.read_only {
                p { a.button href=(retry_all) { "Retry all " (jobs.len()) " shown" } }
            }
            @if jobs.is_empty() {
                p { "No dead jobs." }
            } @else {
                table {
                    thead { tr { th { "job" } th { "buried" } th { "attempts" } th { "last error" } } }
                    tbody {
                        @for job in &jobs {
                            tr {
                                td { a href={ "/admin/queues/" (q.as_str()) "/dead/" (job.id) } { (job.id) } }
                                td { (when(job.buried_at)) }
                                td { (job.attempt) }
                                td.error { (job.failures.last().map(|f| f.error.as_str()).unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// The payload as indented JSON, with long string values (message
/// bodies) cut to a preview; `None` when nothing was cut.
pub(crate) fn previews(payload: &str) -> (String, Option<String>) {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(payload) else {
        return (payload.to_owned(), None);
    };
    let full = serde_json::to_string_pretty(&value).unwrap_or_else(|_| payload.to_owned());
    let mut cut = false;
    shorten(&mut value, &mut cut);
    let short = serde_json::to_string_pretty(&value).unwrap_or_else(|_| payload.to_owned());
    if cut {
        (short, Some(full))
    } else {
        (full, None)
    }
}

fn shorten(value: &mut serde_json::Value, cut: &mut bool) {
    match value {
        serde_json::Value::String(s) if s.chars().count() > BODY_PREVIEW => {
            let kept: String = s.chars().take(BODY_PREVIEW).collect();
            *s = format!("{kept}… ({} characters in all)", s.chars().count());
            *cut = true;
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| shorten(v, cut)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| shorten(v, cut)),
        _ => {}
    }
}

/// The trace id inside a W3C `traceparent`.
pub(crate) fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1).filter(|id| id.len() == 32)
}

pub(crate) async fn dead_detail(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Markup, DashError> {
    let q = queue_named(&queue)?;
    let job: DeadJob = d
        .backends
        .queue
        .dead_job(q, &id)
        .await?
        .ok_or(DashError::NotFound("dead job"))?;
    crate::jobs::detail_page(&d, &op, q, job.into()).await
}

pub(crate) fn job_type(q: QueueName) -> &'static str {
    match q {
        QueueName::Chats => "PersistChat",
        QueueName::Messages => "PersistMessage",
        QueueName::Index => "IndexMessages",
    }
}

pub(crate) async fn audit_page(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
) -> Result<Markup, DashError> {
    let entries = audit::recent(&d.backends.db, 200).await?;
    Ok(layout(
        "Audit",
        Some(&op),
        d.config.read_only,
        html! {
            h1 { "Audit" }
            (audit_table("audit", &entries))
        },
    ))
}

/// Operator actions, newest first.
pub(crate) fn audit_table(id: &str, entries: &[audit::AuditEntry]) -> Markup {
    html! {
        table id=(id) {
            thead { tr { th { "when" } th { "who" } th { "action" } th { "queue" } th { "job" } th { "detail" } } }
            tbody {
                @if entries.is_empty() {
                    tr { td colspan="6" { "No action yet." } }
                }
                @for e in entries {
                    tr {
                        td { (when(e.at)) } td { (e.actor) } td { (e.action) } td { (e.queue) }
                        td { (e.job_id.as_deref().unwrap_or("")) } td { (e.detail.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_are_cut_in_the_preview_and_kept_in_full() {
        let body = "x".repeat(500);
        let (short, full) = previews(&format!("{{\"body\":\"{body}\",\"number\":3}}"));
        assert!(short.contains("(500 characters in all)"), "{short}");
        assert!(full.expect("something was cut").contains(&body));
        let (_, none) = previews("{\"body\":\"short\"}");
        assert!(none.is_none());
    }

    #[test]
    fn markup_is_escaped() {
        let page = layout("<script>", None, false, html! { p { ("<b>&") } }).into_string();
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("&lt;b&gt;&amp;"));
    }
}
