//! The scheduler's page and the data-health page, both read from the run
//! records the scheduler leaves (`chat_store::repo::runs`).
use axum::{Extension, extract::State};
use chat_store::repo::runs::{self, RunRecord};
use maud::{Markup, html};

use crate::{Dashboard, auth::Operator, error::DashError, pages::layout};

/// Runs shown per task.
const RUNS_SHOWN: u64 = 10;

/// A periodic task as the page describes it: its name and its interval
/// in seconds, or `None` when it is turned off.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub task: &'static str,
    pub every_secs: Option<u64>,
}

/// Ticks fall on multiples of the interval since the epoch (the
/// scheduler's own rule), so the next one is computable here.
fn next_tick(every_secs: u64, now_secs: i64) -> i64 {
    let every = every_secs.max(1) as i64;
    (now_secs / every + 1) * every
}

fn at(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A run's task figures as `key value` pairs, nested objects flattened
/// with dots.
fn figures(detail: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => out.push((prefix.to_owned(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", detail, &mut out);
    out
}

fn runs_table(runs: &[RunRecord]) -> Markup {
    html! {
        table.runs {
            thead { tr { th { "tick" } th { "owner" } th { "outcome" } th { "duration" } th { "rows touched" } th { "figures" } th { "error" } } }
            tbody {
                @for r in runs {
                    tr {
                        td { (at(r.tick_at)) }
                        td { (r.owner) }
                        td class={ "outcome " (format!("{:?}", r.outcome).to_lowercase()) } { (format!("{:?}", r.outcome).to_lowercase()) }
                        td { @if let Some(ms) = r.duration_ms { (ms) " ms" } }
                        td { (r.rows_touched) }
                        td.figures {
                            @if let Some(detail) = &r.detail {
                                @for (k, v) in figures(detail) { span { (k) " " b { (v) } } " " }
                            }
                        }
                        td.error { (r.error.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

pub(crate) async fn scheduler_page(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
) -> Result<Markup, DashError> {
    let now = chat_store::now_millis() / 1000;
    let mut sections = Vec::new();
    for schedule in &d.config.schedules {
        let runs = runs::recent(&d.backends.db, Some(schedule.task), RUNS_SHOWN).await?;
        sections.push((schedule, runs));
    }
    Ok(layout(
        "Scheduler",
        Some(&op),
        d.config.read_only,
        html! {
            h1 { "Scheduler" }
            @for (schedule, runs) in &sections {
                section.task data-task=(schedule.task) {
                    h2 { (schedule.task) }
                    p {
                        @match schedule.every_secs {
                            Some(every) => {
                                "every " (every) " s; next tick due "
                                (at(chrono::DateTime::from_timestamp(next_tick(every, now), 0).unwrap_or_default()))
                            }
                            None => "turned off",
                        }
                    }
                    @if runs.is_empty() { p { "No runs yet." } } @else { (runs_table(runs)) }
                }
            }
        },
    ))
}

/// The newest run of `task` that finished, if any.
async fn last_finished(d: &Dashboard, task: &str) -> Result<Option<RunRecord>, DashError> {
    Ok(runs::recent(&d.backends.db, Some(task), RUNS_SHOWN)
        .await?
        .into_iter()
        .find(|r| r.finished_at.is_some()))
}

pub(crate) async fn health_page(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
) -> Result<Markup, DashError> {
    let checks = [
        (
            "counts",
            "Counts, incremental: the chats and applications written since the last run",
        ),
        ("counts_full", "Counts, full: every chat and application"),
        (
            "search_drift",
            "Search drift: per-chat counts, database against the search index",
        ),
    ];
    let mut rows = Vec::new();
    for (task, what) in checks {
        rows.push((task, what, last_finished(&d, task).await?));
    }
    Ok(layout(
        "Data health",
        Some(&op),
        d.config.read_only,
        html! {
            h1 { "Data health" }
            p { "What the checks found and repaired, as of their last finished run." }
            table #health {
                thead { tr { th { "check" } th { "last run" } th { "outcome" } th { "repaired" } th { "figures" } } }
                tbody {
                    @for (task, what, run) in &rows {
                        tr data-task=(task) {
                            td { b { (task) } br; (what) }
                            @match run {
                                Some(r) => {
                                    td { (at(r.tick_at)) }
                                    td { (format!("{:?}", r.outcome).to_lowercase()) }
                                    td { (r.rows_touched) }
                                    td.figures {
                                        @if let Some(detail) = &r.detail {
                                            @for (k, v) in figures(detail) { span { (k) " " b { (v) } } " " }
                                        }
                                    }
                                }
                                None => { td colspan="4" { "not run yet" } }
                            }
                        }
                    }
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_tick_is_the_next_multiple_of_the_interval() {
        assert_eq!(next_tick(60, 120), 180);
        assert_eq!(next_tick(60, 121), 180);
        assert_eq!(next_tick(3600, 7199), 7200);
    }

    #[test]
    fn figures_flatten_nested_objects() {
        let f = figures(&serde_json::json!({"messages": {"done": 3}, "marks": 2}));
        assert!(f.contains(&("messages.done".into(), "3".into())));
        assert!(f.contains(&("marks".into(), "2".into())));
    }
}
