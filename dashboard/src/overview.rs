//! The overview: the state of each backend, the alerts, every queue's
//! counts and percentiles with its pause switch, the throughput charts,
//! the write lags, the workers, Redis's durability and the latest actions.
//!
//! The page and its live twin (`/admin/live/overview`, which the page's
//! script fetches every 2 s) render the same fragment, so everything on
//! it refreshes, not only the counts. A backend that is down costs only
//! the sections that need it: each is rendered from its own result.
use std::{future::Future, time::Duration};

use axum::{
    Extension,
    extract::{Query, State},
};
use chat_ops::{audit, pauses, workers::WorkerBeat};
use chat_queue::{QueueName, QueueStats};
use maud::{Markup, html};
use serde::Deserialize;

use crate::{
    Dashboard,
    auth::Operator,
    error::DashError,
    figures::{self, Range},
    pages::{audit_table, layout, when},
};

/// How long a backend may take to answer the overview's ping.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Deserialize, Default)]
pub(crate) struct OverviewQuery {
    #[serde(default)]
    range: Range,
}

/// One backend's answer to a ping.
struct Probe {
    name: &'static str,
    answer: Result<Duration, String>,
}

async fn probe<F>(name: &'static str, ping: F) -> Probe
where
    F: Future<Output = Result<(), String>>,
{
    let started = std::time::Instant::now();
    let answer = match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
    };
    Probe { name, answer }
}

async fn probes(d: &Dashboard) -> Vec<Probe> {
    let b = &d.deps;
    let mut out = vec![
        probe("database", async {
            b.db.ping().await.map_err(|e| e.to_string())
        })
        .await,
        probe(b.queue.system(), async {
            b.queue.ping().await.map_err(|e| e.to_string())
        })
        .await,
    ];
    if b.search.configured() {
        out.push(
            probe("search", async {
                b.search.ping().await.map_err(|e| e.to_string())
            })
            .await,
        );
    }
    out
}

/// Shows a section, or why it cannot be shown.
fn or_unavailable<T>(result: &Result<T, DashError>, show: impl FnOnce(&T) -> Markup) -> Markup {
    match result {
        Ok(value) => show(value),
        Err(e) => html! { p.unavailable { "Not available: " (e.detail()) } },
    }
}

pub(crate) async fn page(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Query(query): Query<OverviewQuery>,
) -> Markup {
    let body = fragment(&d, &op, query.range).await;
    layout(
        "Overview",
        Some(&op),
        d.config.read_only,
        html! {
            p.live {
                label { input #live-toggle type="checkbox" checked; " live (every 2 s)" }
            }
            div #overview data-live={ "/admin/live/overview?range=" (query.range.as_str()) } { (body) }
        },
    )
}

/// The overview without its page around it, for the live refresh.
pub(crate) async fn live(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Query(query): Query<OverviewQuery>,
) -> Markup {
    fragment(&d, &op, query.range).await
}

async fn stats(d: &Dashboard) -> Result<Vec<(QueueName, QueueStats)>, DashError> {
    let mut rows = Vec::new();
    for q in QueueName::ALL {
        rows.push((q, d.deps.queue.stats(q).await?));
    }
    Ok(rows)
}

async fn fragment(d: &Dashboard, op: &Operator, range: Range) -> Markup {
    let probes = probes(d).await;
    let stats = stats(d).await;
    let figures = figures::load(d).await;
    let throughput = match &figures {
        Ok(f) => figures::throughput(d, f, range).await,
        Err(_) => Err(DashError::Unavailable("the database is unavailable".into())),
    };
    let workers = figures::worker_list(d).await;
    let paused = pauses::all(&d.deps.db).await.map_err(DashError::from);
    let recent = audit::recent(&d.deps.db, 5).await.map_err(DashError::from);
    let durability = match &d.deps.redis {
        Some(redis) => Some(redis.durability().await.map_err(DashError::from)),
        None => None,
    };
    let no_pauses = Vec::new();
    let paused_list = paused.as_ref().unwrap_or(&no_pauses);
    let dead_writes: u64 = stats.as_ref().map_or(0, |rows| {
        rows.iter()
            .filter(|(q, _)| q.holds_accepted_writes())
            .map(|(_, s)| s.dead)
            .sum()
    });
    // Workers waiting out an outage, not those an operator paused.
    let outage: Vec<&WorkerBeat> = workers.as_ref().map_or(Vec::new(), |ws| {
        ws.iter()
            .filter(|w| w.paused.is_some() && !paused_list.iter().any(|p| p.queue == w.queue))
            .collect()
    });
    let down: Vec<&Probe> = probes.iter().filter(|p| p.answer.is_err()).collect();
    html! {
        @for p in &down {
            p.alert data-down=(p.name) {
                "The " (p.name) " backend is down: " (p.answer.as_ref().err().map(String::as_str).unwrap_or(""))
                ". Accepted writes wait in the queue; workers pause and resume by themselves."
            }
        }
        @if dead_writes > 0 {
            p.alert #dead-alert {
                (dead_writes) " dead chat and message jobs hold writes that clients were told were accepted, "
                "and are not in the database. They are kept until you retry or discard them: "
                a href="/admin/queues/messages/jobs/dead" { "dead messages" } ", "
                a href="/admin/queues/chats/jobs/dead" { "dead chats" } "."
            }
        }
        @if let Some(w) = outage.first() {
            p.alert #paused-alert {
                "Claiming is paused (circuit breaker): " (outage.len()) " workers wait for a backend. "
                (w.queue) ": " (w.paused.as_deref().unwrap_or(""))
            }
        }
        @for p in paused_list {
            p.notice data-paused=(p.queue) {
                "Queue " b { (p.queue) } " is paused by " (p.paused_by) " since " (when(p.paused_at))
                ": workers claim nothing from it; the API keeps accepting."
            }
        }
        h1 { "Queues" }
        (or_unavailable(&stats, |rows| queue_table(d, op, rows, paused_list, figures.as_ref().ok())))
        h2 { "Throughput" }
        nav.tabs #range {
            @for r in Range::ALL {
                a class=[(r == range).then_some("current")] href={ "/admin?range=" (r.as_str()) } { "last " (r.as_str()) }
            }
        }
        (or_unavailable(&throughput, |t| t.charts()))
        h2 { "Write lag" }
        (or_unavailable(&figures, figures::lags))
        h2 { "Workers" }
        (or_unavailable(&workers, |w| figures::workers_table(w)))
        h2 { "Backends" }
        table #backends {
            thead { tr { th { "backend" } th { "state" } th { "ping" } } }
            tbody {
                @for p in &probes {
                    tr data-backend=(p.name) {
                        td { (p.name) }
                        @match &p.answer {
                            Ok(took) => { td.ok { "up" } td { (took.as_micros() as f64 / 1000.0) " ms" } }
                            Err(e) => { td.warn { "down" } td.error { (e) } }
                        }
                    }
                }
            }
        }
        @if let Some(redis) = &durability {
            h2 { "Redis" }
            (or_unavailable(redis, |redis| html! {
                table #redis {
                    tbody {
                        tr { th { "append-only file" } td { @if redis.aof { "on" } @else { "off" } } }
                        tr { th { "appendfsync" } td { (redis.fsync.as_deref().unwrap_or("unknown")) } }
                        tr { th { "maxmemory-policy" } td { (redis.eviction) } }
                        tr { th { "a crash loses" } td class=[redis.loses_writes_on_restart().then_some("warn")] { (redis.what_a_crash_loses()) } }
                    }
                }
            }))
        }
        h2 { "Recent actions" }
        (or_unavailable(&recent, |r| audit_table("recent-actions", r)))
        p { a href="/admin/audit" { "Full audit trail" } }
    }
}

fn queue_table(
    d: &Dashboard,
    op: &Operator,
    rows: &[(QueueName, QueueStats)],
    paused: &[pauses::Pause],
    figures: Option<&figures::Figures>,
) -> Markup {
    html! {
        table #queues data-live="/admin/api/queues" {
            thead {
                tr {
                    th rowspan="2" { "queue" } th rowspan="2" { "claiming" } th rowspan="2" { "pending" }
                    th rowspan="2" { "scheduled for retry" } th rowspan="2" { "in flight" } th rowspan="2" { "done" }
                    th rowspan="2" { "dead" }
                    th colspan="2" { "wait, last " (figures::QUANTILE_MINUTES) " min" }
                    th colspan="2" { "run, last " (figures::QUANTILE_MINUTES) " min" }
                    @if !d.config.read_only { th rowspan="2" {} }
                }
                tr { th { "p50" } th { "p99" } th { "p50" } th { "p99" } }
            }
            tbody {
                @for (q, s) in rows {
                    @let pause = paused.iter().find(|p| p.queue == q.as_str());
                    @let base = format!("/admin/queues/{}/jobs", q.as_str());
                    tr data-queue=(q.as_str()) {
                        td { a href={ (base) "/pending" } { (q.as_str()) } }
                        td data-field="claiming" {
                            @match pause {
                                Some(p) => span.paused { "paused by " (p.paused_by) },
                                None => "running",
                            }
                        }
                        td data-field="ready" { a href={ (base) "/pending" } { (s.ready) } }
                        td data-field="retrying" { a href={ (base) "/retrying" } { (s.retrying) } }
                        td data-field="in_flight" { a href={ (base) "/in_flight" } { (s.in_flight) } }
                        td data-field="done" { a href={ (base) "/done" } { (s.done) } }
                        td data-field="dead" { a href={ (base) "/dead" } { (s.dead) } }
                        @match figures {
                            Some(f) => (figures::quantile_cells(&f.queue(*q))),
                            None => { td colspan="4" { "–" } }
                        }
                        @if !d.config.read_only {
                            td {
                                form.inline method="post" action={ "/admin/queues/" (q.as_str()) "/" (if pause.is_some() { "resume" } else { "pause" }) } {
                                    @if let Some(csrf) = &op.csrf { input type="hidden" name="csrf" value=(csrf); }
                                    button type="submit" { @if pause.is_some() { "Resume" } @else { "Pause" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
