//! The overview's figures: throughput over the last hour or day (drawn by
//! [`crate::chart`]), wait and run percentiles per queue, the write lags,
//! and the workers' heartbeats. Everything is read from the
//! per-minute figures and the worker registry that the workers keep, so
//! the cost does not depend on how many jobs the queues hold.
use std::collections::HashMap;

use axum::{Json, extract::State};
use chat_ops::{
    pulse::{self, BUCKETS, Field, LagStage, Quantile},
    workers::{self, WorkerBeat},
};
use chat_queue::QueueName;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use crate::{Dashboard, chart, error::DashError};

/// Minutes the throughput chart covers.
pub(crate) const CHART_MINUTES: usize = 60;
/// Minutes the percentiles cover: recent enough to show a change.
pub(crate) const QUANTILE_MINUTES: i64 = 15;
/// A worker whose heartbeat is older than this is shown as silent.
const SILENT_AFTER_MS: i64 = 15_000;

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

    fn lag(&self, stage: LagStage) -> Histogram {
        self.lags
            .get(stage.as_str())
            .copied()
            .unwrap_or([0; BUCKETS])
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
    for row in pulse::since(&d.deps.db, first_minute).await? {
        let column = (row.minute - first_minute) as usize;
        if column >= CHART_MINUTES {
            continue;
        }
        let recent = row.minute > now - QUANTILE_MINUTES;
        let n = row.n.max(0) as u64;
        let Some(field) = Field::parse(&row.field) else {
            continue;
        };
        if let Field::Lag(b) = field {
            if recent {
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
        match field {
            Field::Done => q.done[column] += n,
            Field::Failed => q.failed[column] += n,
            Field::Wait(b) if recent => q.wait[b] += n,
            Field::Run(b) if recent => q.run[b] += n,
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

/// The window a throughput chart covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Range {
    #[default]
    Hour,
    Day,
}

impl Range {
    pub(crate) const ALL: [Range; 2] = [Range::Hour, Range::Day];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Range::Hour => "hour",
            Range::Day => "day",
        }
    }

    /// Points on the chart and the minutes each covers.
    fn points(self) -> (usize, i64) {
        match self {
            Range::Hour => (CHART_MINUTES, 1),
            Range::Day => (96, 15),
        }
    }
}

/// Jobs processed and failed attempts per minute, per queue, over a range.
pub(crate) struct Throughput {
    first_minute: i64,
    minutes: i64,
    queues: Vec<(QueueName, Vec<f64>, Vec<f64>)>,
}

/// The throughput over `range`. The last hour comes from the figures the
/// overview already read; the day reads only the done and failed counts.
pub(crate) async fn throughput(
    d: &Dashboard,
    figures: &Figures,
    range: Range,
) -> Result<Throughput, DashError> {
    let (points, minutes) = range.points();
    if range == Range::Hour {
        let as_rates = |v: &[u64]| v.iter().map(|&n| n as f64).collect::<Vec<_>>();
        return Ok(Throughput {
            first_minute: figures.first_minute,
            minutes,
            queues: QueueName::ALL
                .into_iter()
                .map(|q| {
                    let f = figures.queue(q);
                    (q, as_rates(&f.done), as_rates(&f.failed))
                })
                .collect(),
        });
    }
    let now = pulse::minute_now();
    // Whole bins, the last one holding the current minute.
    let first_minute = (now.div_euclid(minutes) + 1) * minutes - points as i64 * minutes;
    let mut queues: Vec<_> = QueueName::ALL
        .into_iter()
        .map(|q| (q, vec![0.0; points], vec![0.0; points]))
        .collect();
    for row in pulse::throughput_since(&d.deps.db, first_minute).await? {
        let bin = ((row.minute - first_minute) / minutes) as usize;
        let Some((_, done, failed)) = queues.iter_mut().find(|(q, ..)| q.as_str() == row.series)
        else {
            continue;
        };
        let target = match Field::parse(&row.field) {
            Some(Field::Done) => done,
            Some(Field::Failed) => failed,
            _ => continue,
        };
        if let Some(slot) = target.get_mut(bin) {
            *slot += row.n.max(0) as f64 / minutes as f64;
        }
    }
    Ok(Throughput {
        first_minute,
        minutes,
        queues,
    })
}

impl Throughput {
    fn series<'a>(&self, done: &'a [f64], failed: &'a [f64]) -> chart::Series<'a> {
        chart::Series {
            done,
            failed,
            first_minute: self.first_minute,
            minutes: self.minutes,
        }
    }

    /// Every queue's chart, the sum of them first.
    pub(crate) fn charts(&self) -> Markup {
        let points = self.queues.first().map_or(0, |(_, d, _)| d.len());
        let mut done = vec![0.0; points];
        let mut failed = vec![0.0; points];
        for (_, d, f) in &self.queues {
            done.iter_mut().zip(d).for_each(|(a, b)| *a += b);
            failed.iter_mut().zip(f).for_each(|(a, b)| *a += b);
        }
        html! {
            (chart::draw("chart-all", "All queues", chart::Size::Large, &self.series(&done, &failed)))
            div.charts {
                @for (q, d, f) in &self.queues {
                    (chart::draw(&format!("chart-{}", q.as_str()), q.as_str(), chart::Size::Small, &self.series(d, f)))
                }
            }
        }
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
                @for stage in LagStage::ALL {
                    tr data-stage=(stage.as_str()) {
                        td { (stage.as_str()) }
                        td { (shown(&f.lag(stage), 0.5)) }
                        td { (shown(&f.lag(stage), 0.99)) }
                    }
                }
            }
        }
    }
}

pub(crate) fn workers_table(workers: &[WorkerBeat]) -> Markup {
    let now = chat_links::now_millis();
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
    Ok(workers::list(&d.deps.db).await?)
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
    let lags = LagStage::ALL
        .into_iter()
        .map(|s| (s.as_str(), percentiles(&f.lag(s))))
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
