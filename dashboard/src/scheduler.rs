//! The scheduler's page and the data-health page, both read from the run
//! records the scheduler leaves (`chat_ops::runs`). Runs that
//! repaired drift are kept apart from the routine ones (see
//! `runs::trim`), so a repair stays on the page long after it happened.
use axum::{Extension, extract::State};
use chat_ops::runs::{self, RunRecord, Task};
use maud::{Markup, html};

use crate::{Dashboard, auth::Operator, error::DashError, pages::layout};

/// Runs shown per task.
const RUNS_SHOWN: u64 = 10;

/// A periodic task as the page describes it: its name and its interval
/// in seconds, or `None` when it is turned off.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub task: Task,
    pub every_secs: Option<u64>,
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
    let now = chat_links::now_millis() / 1000;
    let mut sections = Vec::new();
    for schedule in &d.config.schedules {
        let runs = runs::recent(&d.deps.db, Some(schedule.task.name()), RUNS_SHOWN).await?;
        sections.push((schedule, runs));
    }
    Ok(layout(
        "Scheduler",
        Some(&op),
        d.config.read_only,
        html! {
            h1 { "Scheduler" }
            @for (schedule, runs) in &sections {
                section.task data-task=(schedule.task.name()) {
                    h2 { (schedule.task.name()) }
                    p {
                        @match schedule.every_secs {
                            Some(every) => {
                                "every " (every) " s; next tick due "
                                (at(chrono::DateTime::from_timestamp(runs::next_tick(every, now.max(0) as u64) as i64, 0).unwrap_or_default()))
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
    Ok(runs::recent(&d.deps.db, Some(task), RUNS_SHOWN)
        .await?
        .into_iter()
        .find(|r| r.finished_at.is_some()))
}

/// What the data-health page reports on, and how it words a run that
/// changed rows: the incremental recount updates counts that new writes
/// made stale, which is routine; the full recount and the search check
/// find drift, and repair it.
struct Check {
    task: Task,
    what: &'static str,
    /// Whether touching rows means something had drifted.
    finds_drift: bool,
}

const CHECKS: [Check; 3] = [
    Check {
        task: Task::Counts,
        what: "Counts, incremental: the chats and applications written since the last run",
        finds_drift: false,
    },
    Check {
        task: Task::CountsFull,
        what: "Counts, full: every chat and application",
        finds_drift: true,
    },
    Check {
        task: Task::SearchDrift,
        what: "Search drift: per-chat counts, database against the search index",
        finds_drift: true,
    },
];

/// Drift repairs shown per check.
const REPAIRS_SHOWN: u64 = 10;

fn touched(check: &Check, rows: i64) -> String {
    match (check.finds_drift, rows) {
        (_, 0) => "nothing to do".to_owned(),
        (true, n) => format!("drift found and repaired: {n}"),
        (false, n) => format!("{n} brought up to date (routine: new writes)"),
    }
}

fn figures_cell(run: &RunRecord) -> Markup {
    html! {
        td.figures {
            @if let Some(detail) = &run.detail {
                @for (k, v) in figures(detail) { span { (k) " " b { (v) } } " " }
            }
        }
    }
}

pub(crate) async fn health_page(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
) -> Result<Markup, DashError> {
    let mut rows = Vec::new();
    let mut repairs = Vec::new();
    for check in &CHECKS {
        rows.push((check, last_finished(&d, check.task.name()).await?));
        if check.finds_drift {
            for run in runs::repairs(&d.deps.db, check.task.name(), REPAIRS_SHOWN).await? {
                repairs.push((check, run));
            }
        }
    }
    repairs.sort_by_key(|(_, run)| std::cmp::Reverse(run.tick_at));
    Ok(layout(
        "Data health",
        Some(&op),
        d.config.read_only,
        html! {
            h1 { "Data health" }
            p { "What the checks found, as of their last finished run." }
            table #health {
                thead { tr { th { "check" } th { "last run" } th { "outcome" } th { "rows" } th { "figures" } } }
                tbody {
                    @for (check, run) in &rows {
                        tr data-task=(check.task.name()) {
                            td { b { (check.task.name()) } br; (check.what) }
                            @match run {
                                Some(r) => {
                                    td { (at(r.tick_at)) }
                                    td { (format!("{:?}", r.outcome).to_lowercase()) }
                                    td data-field="touched" { (touched(check, r.rows_touched)) }
                                    (figures_cell(r))
                                }
                                None => { td colspan="4" { "not run yet" } }
                            }
                        }
                    }
                }
            }
            h2 { "Recent drift repairs" }
            p { "The last " (REPAIRS_SHOWN) " runs of each check that found drift and repaired it, however long ago." }
            table #repairs {
                thead { tr { th { "check" } th { "tick" } th { "repaired" } th { "figures" } } }
                tbody {
                    @if repairs.is_empty() {
                        tr { td colspan="4" { "No drift found yet." } }
                    }
                    @for (check, r) in &repairs {
                        tr data-task=(check.task.name()) {
                            td { (check.task.name()) }
                            td { (at(r.tick_at)) }
                            td { (r.rows_touched) }
                            (figures_cell(r))
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
    fn routine_recounts_are_worded_apart_from_drift() {
        assert!(touched(&CHECKS[0], 2).contains("routine"));
        assert!(touched(&CHECKS[1], 2).contains("drift"));
        assert!(touched(&CHECKS[2], 0).contains("nothing"));
    }

    #[test]
    fn figures_flatten_nested_objects() {
        let f = figures(&serde_json::json!({"messages": {"done": 3}, "marks": 2}));
        assert!(f.contains(&("messages.done".into(), "3".into())));
        assert!(f.contains(&("marks".into(), "2".into())));
    }
}
