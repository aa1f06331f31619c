//! The scheduler's run history, which is also how replicas agree on who
//! runs a tick.
//!
//! A run starts by inserting its `(task, tick_at)` row; the unique key on
//! that pair admits exactly one replica per tick on both backends, and the
//! others see zero rows inserted and skip. The winner heartbeats while it
//! works and records the outcome at the end. A run whose owner died stays
//! `running` until a later run of its task marks it `abandoned`; it never
//! blocks a later tick, whose row is a different key.
use chrono::{DateTime, TimeZone, Utc};
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};
use serde::Serialize;

use chat_links::error::Result;

/// The scheduler's periodic tasks, by the name their run records carry:
/// the scheduler runs them and the dashboard reads their records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    /// Recounts the parents that writes marked since the last run.
    Counts,
    /// Recounts every parent, repairing any drift the marks missed.
    CountsFull,
    /// Trims done and dead job records, expired pending entries, old job
    /// figures and the registry rows of workers that went silent.
    Housekeeping,
    /// Compares the search index with the database and repairs it.
    SearchDrift,
}

impl Task {
    pub const ALL: [Task; 4] = [
        Task::Counts,
        Task::CountsFull,
        Task::Housekeeping,
        Task::SearchDrift,
    ];

    /// The name in run records and logs.
    pub fn name(self) -> &'static str {
        match self {
            Task::Counts => "counts",
            Task::CountsFull => "counts_full",
            Task::Housekeeping => "housekeeping",
            Task::SearchDrift => "search_drift",
        }
    }
}

/// The first tick after `now_secs` of a task run every `every_secs`.
/// Ticks fall on multiples of the interval since the Unix epoch: every
/// replica computes the same ones from its own clock, so a tick is a key
/// they race on, and the dashboard can say when the next one is due.
pub fn next_tick(every_secs: u64, now_secs: u64) -> u64 {
    let every = every_secs.max(1);
    (now_secs / every + 1) * every
}

/// How a run ended, or that it has not yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Ok,
    Failed,
    /// Its scheduler stopped heartbeating before finishing it.
    Abandoned,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Abandoned => "abandoned",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "ok" => Outcome::Ok,
            "failed" => Outcome::Failed,
            "abandoned" => Outcome::Abandoned,
            _ => Outcome::Running,
        }
    }
}

/// One run of one periodic task, as the dashboard shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    pub task: String,
    /// The tick's scheduled time (not when a replica happened to wake).
    pub tick_at: DateTime<Utc>,
    /// `host:pid` of the scheduler that ran it.
    pub owner: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub rows_touched: i64,
    pub outcome: Outcome,
    /// Task-specific figures (checked, repaired, trimmed…) as JSON.
    pub detail: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// A run this process owns, from [`begin`] to [`finish`].
#[derive(Clone, Copy, Debug)]
pub struct RunId(i64);

/// Claims `tick_at` of `task` for `owner`: `Some` when this caller is the
/// one replica to run it, `None` when another already has.
pub async fn begin(
    db: &impl ConnectionTrait,
    task: &str,
    tick_at: i64,
    owner: &str,
) -> Result<Option<RunId>> {
    let backend = db.get_database_backend();
    let verb = match backend {
        DbBackend::MySql => "INSERT IGNORE",
        _ => "INSERT OR IGNORE",
    };
    let now = chat_links::now_millis();
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "{verb} INTO scheduler_runs \
                 (task, tick_at, owner, started_at, heartbeat_at, rows_touched, outcome) \
                 VALUES (?, ?, ?, ?, ?, 0, 'running')"
            ),
            [
                task.into(),
                tick_at.into(),
                owner.into(),
                now.into(),
                now.into(),
            ],
        ))
        .await?;
    Ok((done.rows_affected() == 1).then(|| RunId(done.last_insert_id() as i64)))
}

/// Tells other replicas this run's owner is alive.
pub async fn heartbeat(db: &impl ConnectionTrait, run: RunId) -> Result<()> {
    exec(
        db,
        "UPDATE scheduler_runs SET heartbeat_at = ? WHERE id = ? AND outcome = 'running'",
        vec![chat_links::now_millis().into(), run.0.into()],
    )
    .await
    .map(drop)
}

/// What a finished run reports.
pub struct Finished {
    pub rows_touched: u64,
    pub detail: Option<serde_json::Value>,
    /// `Some` for a failed run.
    pub error: Option<String>,
}

pub async fn finish(db: &impl ConnectionTrait, run: RunId, end: Finished) -> Result<()> {
    let now = chat_links::now_millis();
    let outcome = if end.error.is_some() {
        Outcome::Failed
    } else {
        Outcome::Ok
    };
    exec(
        db,
        "UPDATE scheduler_runs SET finished_at = ?, heartbeat_at = ?, rows_touched = ?, \
         outcome = ?, detail = ?, error = ? WHERE id = ?",
        vec![
            now.into(),
            now.into(),
            (end.rows_touched as i64).into(),
            outcome.as_str().into(),
            end.detail.map(|d| d.to_string()).into(),
            end.error.into(),
            run.0.into(),
        ],
    )
    .await
    .map(drop)
}

/// Marks the runs (of any task) that have not heartbeaten since
/// `stale_before_ms` as abandoned; returns how many. Any task's tick calls
/// it, so an hourly task's dead run is not left `running` for an hour.
pub async fn abandon_stale(db: &impl ConnectionTrait, stale_before_ms: i64) -> Result<u64> {
    exec(
        db,
        "UPDATE scheduler_runs SET outcome = 'abandoned', finished_at = heartbeat_at \
         WHERE outcome = 'running' AND heartbeat_at < ?",
        vec![stale_before_ms.into()],
    )
    .await
}

/// Keeps the newest `keep` runs of `task` that touched nothing and,
/// apart from them, the newest `keep` that repaired something, and deletes
/// the rest: a repair stays visible long after a minute's quiet runs
/// would have pushed it out.
pub async fn trim(db: &impl ConnectionTrait, task: &str, keep: u64) -> Result<u64> {
    let mut deleted = 0;
    for touched in ["rows_touched = 0", "rows_touched > 0"] {
        #[derive(FromQueryResult)]
        struct Edge {
            tick_at: i64,
        }
        // Two statements: MySQL cannot delete from a table that its own
        // sub-query reads.
        let edge = Edge::find_by_statement(Statement::from_sql_and_values(
            db.get_database_backend(),
            format!(
                "SELECT tick_at FROM scheduler_runs WHERE task = ? AND {touched} \
                 ORDER BY tick_at DESC LIMIT 1 OFFSET ?"
            ),
            [task.into(), (keep.saturating_sub(1) as i64).into()],
        ))
        .one(db)
        .await?;
        let Some(edge) = edge else { continue };
        deleted += exec(
            db,
            &format!("DELETE FROM scheduler_runs WHERE task = ? AND {touched} AND tick_at < ?"),
            vec![task.into(), edge.tick_at.into()],
        )
        .await?;
    }
    Ok(deleted)
}

/// The newest finished runs of `task` that repaired something, newest
/// first.
pub async fn repairs(db: &impl ConnectionTrait, task: &str, limit: u64) -> Result<Vec<RunRecord>> {
    let rows = Row::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!(
            "SELECT {COLUMNS} FROM scheduler_runs WHERE task = ? AND rows_touched > 0 \
             AND finished_at IS NOT NULL ORDER BY tick_at DESC LIMIT ?"
        ),
        [task.into(), (limit as i64).into()],
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(RunRecord::from).collect())
}

const COLUMNS: &str =
    "task, tick_at, owner, started_at, finished_at, rows_touched, outcome, detail, error";

#[derive(FromQueryResult)]
struct Row {
    task: String,
    tick_at: i64,
    owner: String,
    started_at: i64,
    finished_at: Option<i64>,
    rows_touched: i64,
    outcome: String,
    detail: Option<String>,
    error: Option<String>,
}

fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl From<Row> for RunRecord {
    fn from(r: Row) -> Self {
        RunRecord {
            tick_at: Utc.timestamp_opt(r.tick_at, 0).single().unwrap_or_default(),
            owner: r.owner,
            started_at: millis(r.started_at),
            finished_at: r.finished_at.map(millis),
            duration_ms: r.finished_at.map(|f| f - r.started_at),
            rows_touched: r.rows_touched,
            outcome: Outcome::parse(&r.outcome),
            detail: r.detail.and_then(|d| serde_json::from_str(&d).ok()),
            error: r.error,
            task: r.task,
        }
    }
}

/// The newest runs, newest tick first: of one task, or of all.
pub async fn recent(
    db: &impl ConnectionTrait,
    task: Option<&str>,
    limit: u64,
) -> Result<Vec<RunRecord>> {
    let (sql, values): (String, Vec<Value>) = match task {
        Some(task) => (
            format!(
                "SELECT {COLUMNS} FROM scheduler_runs WHERE task = ? \
                 ORDER BY tick_at DESC LIMIT ?"
            ),
            vec![task.into(), (limit as i64).into()],
        ),
        None => (
            format!("SELECT {COLUMNS} FROM scheduler_runs ORDER BY id DESC LIMIT ?"),
            vec![(limit as i64).into()],
        ),
    };
    let rows = Row::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        sql,
        values,
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(RunRecord::from).collect())
}

async fn exec(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Result<u64> {
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            values,
        ))
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tick_tests {
    use super::*;

    #[test]
    fn the_next_tick_is_the_next_multiple_of_the_interval() {
        assert_eq!(next_tick(60, 120), 180);
        assert_eq!(next_tick(60, 121), 180);
        assert_eq!(next_tick(3600, 7199), 7200);
        assert_eq!(next_tick(0, 5), 6, "an interval of 0 runs every second");
    }

    #[test]
    fn every_task_has_its_own_name() {
        let mut names: Vec<_> = Task::ALL.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Task::ALL.len());
    }
}
