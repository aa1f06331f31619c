//! The overview's figures: throughput per minute over the last hour as an
//! SVG chart drawn on the server, wait and run percentiles per queue, the
//! write lags, and the workers' heartbeats. Everything is read from the
//! per-minute figures and the worker registry that the workers keep, so
//! the cost does not depend on how many jobs the queues hold.
use std::collections::HashMap;

use axum::{Json, extract::State};
use chat_store::{
    queue::QueueName,
    repo::{
        pulse::{self, BUCKETS, Quantile},
        workers::{self, WorkerBeat},
    },
};
use maud::{Markup, html};
use serde::Serialize;

use crate::{Dashboard, error::DashError};

/// Minutes the throughput chart covers.
pub(crate) const CHART_MINUTES: usize = 60;
/// Minutes the percentiles cover: recent enough to show a change.
pub(crate) const QUANTILE_MINUTES: i64 = 15;
/// A worker whose heartbeat is older than this is shown as silent.
const SILENT_AFTER_MS: i64 = 15_000;
/// The write stages whose lag the workers report.
pub(crate) const LAG_STAGES: [&str; 2] = ["persisted", "indexed"];

type Histogram = [u64; BUCKETS];

#[derive(Clone, Debug, Serialize)]
pub(crate) struct QueueFigures {
    /// Jobs done per minute, oldest first; the last is the current minute.
    pub done: Vec<u64>,
    pub failed: Vec<u64>,
    #[serde(skip)]
    wait: Histogram,
    #[serde(skip)]
    run: Histogram,
}

impl QueueFigures {
    /// A queue with no figures in the window: a chart of zeros.
    fn empty() -> Self {
        Self {
            done: vec![0; CHART_MINUTES],
            failed: vec![0; CHART_MINUTES],
            wait: [0; BUCKETS],
            run: [0; BUCKETS],
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Figures {
    /// The minute of the chart's first column.
    pub first_minute: i64,
    queues: HashMap<String, QueueFigures>,
    lags: HashMap<String, Histogram>,
}

impl Figures {
    pub(crate) fn queue(&self, q: QueueName) -> QueueFigures {
        self.queues
            .get(q.as_str())
            .cloned()
            .unwrap_or_else(QueueFigures::empty)
    }

    fn lag(&self, stage: &str) -> Histogram {
        self.lags.get(stage).copied().unwrap_or([0; BUCKETS])
    }
}

/// Reads the last hour of figures.
pub(crate) async fn load(d: &Dashboard) -> Result<Figures, DashError> {
    let now = pulse::minute_now();
    let first_minute = now - CHART_MINUTES as i64 + 1;
    let mut figures = Figures {
        first_minute,
        ..Figures::default()
    };
    for row in pulse::since(&d.backends.db, first_minute).await? {
        let column = (row.minute - first_minute) as usize;
        if column >= CHART_MINUTES {
            continue;
        }
        let recent = row.minute > now - QUANTILE_MINUTES;
        let n = row.n.max(0) as u64;
        let (name, bucket) = match row.field.split_once('.') {
            Some((name, b)) => (name, b.parse::<usize>().ok().filter(|&b| b < BUCKETS)),
            None => (row.field.as_str(), None),
        };
        if name == "lag" {
            if let (Some(b), true) = (bucket, recent) {
                figures
                    .lags
                    .entry(row.series.clone())
                    .or_insert([0; BUCKETS])[b] += n;
            }
            continue;
        }
        let q = figures
            .queues
            .entry(row.series.clone())
            .or_insert_with(QueueFigures::empty);
        match (name, bucket) {
            ("done", None) => q.done[column] += n,
            ("failed", None) => q.failed[column] += n,
            ("wait", Some(b)) if recent => q.wait[b] += n,
            ("run", Some(b)) if recent => q.run[b] += n,
            _ => {}
        }
    }
    Ok(figures)
}

/// A quantile as the page shows it: the bucket bound it lies under.
fn shown(h: &Histogram, q: f64) -> String {
    match pulse::quantile(h, q) {
        None => "–".to_owned(),
        Some(Quantile::AtMost(ms)) => format!("≤ {}", duration(ms)),
        Some(Quantile::Over(ms)) => format!("> {}", duration(ms)),
    }
}

fn duration(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{} s", ms / 1_000)
    } else {
        format!("{} min", ms / 60_000)
    }
}

/// A bar chart of done (above the axis) and failed (below) jobs per
/// minute. The scale is shared by both, and printed.
pub(crate) fn chart(q: &QueueFigures) -> Markup {
    const W: usize = 4;
    const H: u64 = 40;
    let peak = q
        .done
        .iter()
        .chain(q.failed.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let height = |n: u64| (n * H).div_ceil(peak);
    let width = CHART_MINUTES * W;
    let total_done: u64 = q.done.iter().sum();
    let total_failed: u64 = q.failed.iter().sum();
    html! {
        svg.chart width=(width) height=(H * 2 + 2) viewBox={ "0 0 " (width) " " (H * 2 + 2) }
            role="img" aria-label={ (total_done) " done and " (total_failed) " failed in the last hour, peak " (peak) " per minute" } {
            line x1="0" y1=(H + 1) x2=(width) y2=(H + 1) class="axis" {}
            @for (i, &n) in q.done.iter().enumerate() {
                @if n > 0 {
                    rect.done x=(i * W) y=(H + 1 - height(n)) width=(W - 1) height=(height(n)) {
                        title { (n) " done" }
                    }
                }
            }
            @for (i, &n) in q.failed.iter().enumerate() {
                @if n > 0 {
                    rect.failed x=(i * W) y=(H + 2) width=(W - 1) height=(height(n)) {
                        title { (n) " failed" }
                    }
                }
            }
        }
        div.chart-legend { "peak " (peak) "/min · " (total_done) " done · " (total_failed) " failed" }
    }
}

/// The percentile cells of one queue: wait p50, p99, run p50, p99.
pub(crate) fn quantile_cells(q: &QueueFigures) -> Markup {
    html! {
        td data-figure="wait-p50" { (shown(&q.wait, 0.5)) }
        td data-figure="wait-p99" { (shown(&q.wait, 0.99)) }
        td data-figure="run-p50" { (shown(&q.run, 0.5)) }
        td data-figure="run-p99" { (shown(&q.run, 0.99)) }
    }
}

/// The persistence and indexing lags: from the API's acceptance of a
/// write to its row being committed, and to its being searchable.
pub(crate) fn lags(f: &Figures) -> Markup {
    html! {
        table #lags {
            thead { tr { th { "write lag, last " (QUANTILE_MINUTES) " min" } th { "p50" } th { "p99" } } }
            tbody {
                @for stage in LAG_STAGES {
                    tr data-stage=(stage) {
                        td { (stage) }
                        td { (shown(&f.lag(stage), 0.5)) }
                        td { (shown(&f.lag(stage), 0.99)) }
                    }
                }
            }
        }
    }
}

pub(crate) fn workers_table(workers: &[WorkerBeat]) -> Markup {
    let now = chat_store::now_millis();
    html! {
        table #workers {
            thead { tr { th { "worker" } th { "queue" } th { "host" } th { "pid" } th { "last heartbeat" } th { "in flight" } th { "processed" } th { "failed" } th { "state" } } }
            tbody {
                @if workers.is_empty() {
                    tr { td colspan="9" { "No worker is registered." } }
                }
                @for w in workers {
                    @let age = (now - w.beat_at).max(0);
                    tr data-worker=(w.name) class=[(age > SILENT_AFTER_MS).then_some("silent")] {
                        td { (w.name) }
                        td { (w.queue) }
                        td { (w.host) }
                        td { (w.pid) }
                        td { (age / 1_000) " s ago" @if age > SILENT_AFTER_MS { " (silent)" } }
                        td { (w.in_flight) }
                        td { (w.processed) }
                        td { (w.failed) }
                        td data-field="state" {
                            @match &w.paused {
                                Some(why) => span.paused { "paused: " (why) },
                                None => "working",
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) async fn worker_list(d: &Dashboard) -> Result<Vec<WorkerBeat>, DashError> {
    Ok(workers::list(&d.backends.db).await?)
}

#[derive(Serialize)]
pub(crate) struct FiguresView {
    /// Minutes since the epoch of the first value of each series.
    first_minute: i64,
    queues: HashMap<&'static str, QueueSummary>,
    lags: HashMap<&'static str, Percentiles>,
}

#[derive(Serialize)]
struct QueueSummary {
    #[serde(flatten)]
    per_minute: QueueFigures,
    wait: Percentiles,
    run: Percentiles,
}

/// Upper bounds in ms of the buckets holding the percentiles; `None`
/// without samples, or when above the largest bucket.
#[derive(Serialize)]
struct Percentiles {
    p50_ms: Option<u64>,
    p99_ms: Option<u64>,
}

fn percentiles(h: &Histogram) -> Percentiles {
    let at_most = |q| match pulse::quantile(h, q) {
        Some(Quantile::AtMost(ms)) => Some(ms),
        _ => None,
    };
    Percentiles {
        p50_ms: at_most(0.5),
        p99_ms: at_most(0.99),
    }
}

/// The overview's figures as JSON.
pub(crate) async fn figures_json(
    State(d): State<Dashboard>,
) -> Result<Json<FiguresView>, DashError> {
    let f = load(&d).await?;
    let queues = QueueName::ALL
        .into_iter()
        .map(|q| {
            let figures = f.queue(q);
            let summary = QueueSummary {
                wait: percentiles(&figures.wait),
                run: percentiles(&figures.run),
                per_minute: figures,
            };
            (q.as_str(), summary)
        })
        .collect();
    let lags = LAG_STAGES
        .into_iter()
        .map(|s| (s, percentiles(&f.lag(s))))
        .collect();
    Ok(Json(FiguresView {
        first_minute: f.first_minute,
        queues,
        lags,
    }))
}

pub(crate) async fn workers_json(
    State(d): State<Dashboard>,
) -> Result<Json<Vec<WorkerBeat>>, DashError> {
    Ok(Json(worker_list(&d).await?))
}
