//! The job queue as one SQLite table, for the embedded profile.
//!
//! A claim is one `UPDATE … RETURNING` that leases up to N ready rows.
//! An ack keeps the lease columns, so a done row still says which worker
//! ran it and when (nothing reads the lease of a settled row otherwise),
//! and moves its ready time to `ready_at`, so it says how long it waited.
//! The `dead` column is the row's state: 0 live, 1 dead, 2 done. An ack
//! marks rows done and a bury marks them dead; both set `run_at` to the
//! settle time, so the `(queue, dead, run_at)` index that serves claims
//! also serves housekeeping's trim by age. Claims only ever read the
//! `dead = 0` part of that index, so their cost does not grow with the
//! history kept (the decay measured in apalis-sqlite 1.0.0), and
//! [`JobQueue::trim`] keeps the history itself bounded.
use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement, Value};
use tokio::sync::Notify;

use super::{
    Claimed, DeadJob, Failure, JobPage, JobQueue, JobRecord, JobSearch, JobState, QueueName,
    QueueStats, Retention, Trimmed,
};
use crate::error::Result;

/// How often an idle consumer looks again when nothing woke it: the
/// fallback for writers in another process.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Rows one trim statement deletes.
const TRIM_CHUNK: i64 = 5_000;
const LIVE: i64 = 0;
const DEAD: i64 = 1;
const DONE: i64 = 2;

pub struct SqliteQueue {
    /// Counts and listings.
    db: DatabaseConnection,
    /// Every statement that changes the table.
    writer: DatabaseConnection,
    lease: Duration,
    /// Most done rows kept per queue; enforced by `trim`.
    done_cap: u64,
    /// Wakes consumers in this process as soon as a job is committed.
    pushed: Arc<Notify>,
}

#[derive(FromQueryResult)]
struct Row {
    id: i64,
    payload: String,
    attempt: i32,
    errors: String,
    trace: Option<String>,
    run_at: i64,
    enqueued_at: i64,
}

#[derive(FromQueryResult)]
struct Live {
    ready: Option<i64>,
    in_flight: Option<i64>,
    retrying: Option<i64>,
}

#[derive(FromQueryResult)]
struct Settled {
    state: i64,
    n: i64,
}

impl SqliteQueue {
    pub fn new(db: DatabaseConnection, writer: DatabaseConnection, lease: Duration) -> Arc<Self> {
        Arc::new(Self {
            db,
            writer,
            lease,
            done_cap: 10_000,
            pushed: Arc::new(Notify::new()),
        })
    }

    /// Keeps at most about `cap` done rows per queue (default 10,000); 0
    /// keeps none beyond the next trim.
    pub fn with_done_cap(mut self: Arc<Self>, cap: u64) -> Arc<Self> {
        Arc::get_mut(&mut self)
            .expect("set the cap before sharing")
            .done_cap = cap;
        self
    }

    /// Deletes the `state` rows of `queue` settled before `before` (a
    /// `run_at`); returns how many.
    async fn trim_settled(&self, queue: QueueName, state: i64, before: i64) -> Result<u64> {
        self.delete_chunked(
            "queue = ? AND dead = ? AND run_at < ?",
            vec![queue.as_str().into(), state.into(), before.into()],
        )
        .await
    }

    /// Deletes the done rows of `queue` beyond the newest `done_cap`. By id
    /// rather than settle time: many rows settle in the same millisecond,
    /// and a cut by time would take them all.
    async fn trim_beyond_cap(&self, queue: QueueName) -> Result<u64> {
        #[derive(FromQueryResult)]
        struct Edge {
            id: i64,
        }
        let edge = Edge::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT id FROM queue_jobs WHERE queue = ? AND dead = ? \
             ORDER BY id DESC LIMIT 1 OFFSET ?",
            [
                queue.as_str().into(),
                DONE.into(),
                (self.done_cap as i64).into(),
            ],
        ))
        .one(&self.db)
        .await?;
        let Some(edge) = edge else { return Ok(0) };
        self.delete_chunked(
            "queue = ? AND dead = ? AND id <= ?",
            vec![queue.as_str().into(), DONE.into(), edge.id.into()],
        )
        .await
    }

    /// Deletes the rows matching `filter`, [`TRIM_CHUNK`] per statement, so
    /// a large trim never holds the single writer for long.
    async fn delete_chunked(&self, filter: &str, values: Vec<Value>) -> Result<u64> {
        let sql = format!(
            "DELETE FROM queue_jobs WHERE id IN (SELECT id FROM queue_jobs WHERE {filter} LIMIT ?)"
        );
        let mut values = values;
        values.push(TRIM_CHUNK.into());
        let mut total = 0;
        loop {
            let done = self
                .writer
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    &sql,
                    values.clone(),
                ))
                .await?;
            total += done.rows_affected();
            if (done.rows_affected() as i64) < TRIM_CHUNK {
                return Ok(total);
            }
        }
    }

    /// Inserts a job inside the caller's transaction; call [`Self::notify`]
    /// after it commits.
    pub(crate) async fn insert(
        conn: &impl ConnectionTrait,
        queue: QueueName,
        payload: String,
        trace: Option<&str>,
    ) -> Result<()> {
        let now = crate::now_millis();
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT INTO queue_jobs \
               (queue, payload, attempt, run_at, dead, errors, enqueued_at, trace) \
             VALUES (?, ?, 1, ?, 0, '[]', ?, ?)",
            [
                queue.as_str().into(),
                payload.into(),
                now.into(),
                now.into(),
                trace.map(str::to_owned).into(),
            ],
        ))
        .await?;
        Ok(())
    }

    pub(crate) fn notify(&self) {
        self.pushed.notify_waiters();
    }

    async fn try_claim(
        &self,
        queue: QueueName,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Claimed>> {
        let now = crate::now_millis();
        let until = now + self.lease.as_millis() as i64;
        let rows = Row::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            // A row still carrying a lease owner was claimed before and never
            // settled (its worker died): that delivery counts as an attempt.
            "UPDATE queue_jobs SET attempt = attempt + (lease_owner IS NOT NULL), \
               lease_owner = ?, lease_until = ? WHERE id IN ( \
               SELECT id FROM queue_jobs WHERE queue = ? AND dead = 0 AND run_at <= ? \
               AND (lease_until IS NULL OR lease_until < ?) ORDER BY id LIMIT ?) \
             RETURNING id, payload, attempt, errors, trace, run_at, enqueued_at",
            [
                consumer.into(),
                until.into(),
                queue.as_str().into(),
                now.into(),
                now.into(),
                (max as i64).into(),
            ],
        ))
        .all(&self.writer)
        .await?;
        let mut jobs: Vec<Claimed> = rows
            .into_iter()
            .map(|r| Claimed {
                id: r.id.to_string(),
                payload: r.payload,
                attempt: r.attempt.max(1) as u32,
                failures: serde_json::from_str(&r.errors).unwrap_or_default(),
                trace: r.trace,
                // Set at enqueue, and to the due time by a retry.
                ready_at: r.run_at,
                claimed_at: now,
                enqueued_at: r.enqueued_at,
                worker: consumer.to_owned(),
            })
            .collect();
        // RETURNING gives no order guarantee; keep enqueue order.
        jobs.sort_by_key(|j| j.id.parse::<i64>().unwrap_or(0));
        Ok(jobs)
    }

    /// Runs one statement on the writer; returns the rows it changed.
    async fn exec(&self, sql: &str, values: Vec<Value>) -> Result<u64> {
        let done = self
            .writer
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                sql,
                values,
            ))
            .await?;
        Ok(done.rows_affected())
    }
}

/// A row as the listings read it, whatever its state.
#[derive(FromQueryResult)]
struct AnyRow {
    id: i64,
    payload: String,
    attempt: i32,
    errors: String,
    trace: Option<String>,
    run_at: i64,
    dead: i64,
    lease_owner: Option<String>,
    lease_until: Option<i64>,
    enqueued_at: i64,
    /// Set when the row settles: the `run_at` it had until then.
    ready_at: Option<i64>,
}

const ANY_COLUMNS: &str = "id, payload, attempt, errors, trace, run_at, dead, lease_owner, \
     lease_until, enqueued_at, ready_at";

/// Which rows are in `state` at `?1` (now): the same split as `stats`.
fn state_filter(state: JobState) -> &'static str {
    match state {
        JobState::Pending => {
            "dead = 0 AND run_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1)"
        }
        JobState::InFlight => "dead = 0 AND lease_until >= ?1",
        JobState::Retrying => {
            "dead = 0 AND run_at > ?1 AND (lease_until IS NULL OR lease_until < ?1)"
        }
        JobState::Done => "dead = 2",
        JobState::Dead => "dead = 1",
    }
}

/// `lease` turns a lease's end back into its claim time: an ack keeps the
/// lease columns, so a done row still says who ran it and when.
fn record(r: AnyRow, now: i64, lease: Duration) -> JobRecord {
    let leased = r.lease_until.is_some_and(|until| until >= now);
    let state = match r.dead {
        DEAD => JobState::Dead,
        DONE => JobState::Done,
        _ if leased => JobState::InFlight,
        _ if r.run_at > now => JobState::Retrying,
        _ => JobState::Pending,
    };
    let failures = serde_json::from_str::<Vec<Failure>>(&r.errors).unwrap_or_default();
    let ran = matches!(state, JobState::InFlight | JobState::Done);
    let worker = match state {
        JobState::Dead => failures.last().and_then(|f| f.worker.clone()),
        _ if ran => r.lease_owner,
        _ => None,
    };
    JobRecord {
        id: r.id.to_string(),
        job_id: r.id.to_string(),
        state,
        at: r.run_at,
        payload: r.payload,
        attempt: r.attempt.max(0) as u32,
        failures,
        trace: r.trace,
        worker,
        enqueued_at: Some(r.enqueued_at),
        ready_at: if r.dead == LIVE {
            Some(r.run_at)
        } else {
            r.ready_at
        },
        started_at: r
            .lease_until
            .filter(|_| ran)
            .map(|until| until - lease.as_millis() as i64),
    }
}

/// A cursor is the last row's `run_at:id`: rows are ordered by both.
fn parse_cursor(cursor: Option<&str>) -> (i64, i64) {
    cursor
        .and_then(|c| c.split_once(':'))
        .and_then(|(at, id)| Some((at.parse().ok()?, id.parse().ok()?)))
        .unwrap_or((i64::MAX, i64::MAX))
}

/// A dead row; `run_at` holds the time it was buried.
fn dead(r: Row) -> DeadJob {
    DeadJob {
        id: r.id.to_string(),
        job_id: r.id.to_string(),
        buried_at: r.run_at,
        payload: r.payload,
        attempt: r.attempt.max(0) as u32,
        failures: serde_json::from_str::<Vec<Failure>>(&r.errors).unwrap_or_default(),
        trace: r.trace,
        enqueued_at: Some(r.enqueued_at),
    }
}

#[async_trait]
impl JobQueue for SqliteQueue {
    async fn enqueue_traced(
        &self,
        queue: QueueName,
        payload: String,
        trace: Option<String>,
    ) -> Result<()> {
        Self::insert(&self.writer, queue, payload, trace.as_deref()).await?;
        self.notify();
        Ok(())
    }

    async fn claim(
        &self,
        queue: QueueName,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a push between the look
            // and the wait is not missed.
            let pushed = self.pushed.notified();
            let jobs = self.try_claim(queue, consumer, max).await?;
            let now = tokio::time::Instant::now();
            if !jobs.is_empty() || now >= deadline {
                return Ok(jobs);
            }
            let nap = (deadline - now).min(IDLE_POLL);
            let _ = tokio::time::timeout(nap, pushed).await;
        }
    }

    async fn ack(&self, _queue: QueueName, jobs: &[Claimed]) -> Result<()> {
        for chunk in jobs.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let values = chunk
                .iter()
                .map(|job| job.id.parse::<i64>().unwrap_or(-1).into())
                .collect();
            let mut values: Vec<Value> = values;
            values.insert(0, crate::now_millis().into());
            values.insert(0, DONE.into());
            self.exec(
                &format!(
                    "UPDATE queue_jobs SET dead = ?, ready_at = run_at, run_at = ? \
                     WHERE id IN ({marks}) AND dead = {LIVE}"
                ),
                values,
            )
            .await?;
        }
        Ok(())
    }

    async fn retry(
        &self,
        _queue: QueueName,
        job: &Claimed,
        error: &str,
        delay: Duration,
    ) -> Result<()> {
        let failures = serde_json::to_string(&job.with_failure(error))?;
        let run_at = crate::now_millis() + delay.as_millis() as i64;
        self.exec(
            "UPDATE queue_jobs SET attempt = attempt + 1, run_at = ?, errors = ?, \
             lease_owner = NULL, lease_until = NULL WHERE id = ?",
            vec![
                run_at.into(),
                failures.into(),
                job.id.parse::<i64>().unwrap_or(-1).into(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn defer(&self, _queue: QueueName, jobs: &[Claimed], delay: Duration) -> Result<()> {
        let run_at = crate::now_millis() + delay.as_millis() as i64;
        for chunk in jobs.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut values: Vec<Value> = vec![run_at.into()];
            values.extend(
                chunk
                    .iter()
                    .map(|job| job.id.parse::<i64>().unwrap_or(-1).into()),
            );
            // Clearing the lease owner is what keeps the next claim from
            // counting this delivery as an attempt.
            self.exec(
                &format!(
                    "UPDATE queue_jobs SET run_at = ?, lease_owner = NULL, lease_until = NULL \
                     WHERE id IN ({marks}) AND dead = {LIVE}"
                ),
                values,
            )
            .await?;
        }
        self.notify();
        Ok(())
    }

    async fn renew(&self, _queue: QueueName, consumer: &str, ids: &[String]) -> Result<usize> {
        let until = crate::now_millis() + self.lease.as_millis() as i64;
        let mut renewed = 0;
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut values: Vec<Value> = vec![until.into(), consumer.into()];
            values.extend(
                chunk
                    .iter()
                    .map(|id| id.parse::<i64>().unwrap_or(-1).into()),
            );
            let done = self
                .writer
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    format!(
                        "UPDATE queue_jobs SET lease_until = ? \
                         WHERE lease_owner = ? AND dead = {LIVE} AND id IN ({marks})"
                    ),
                    values,
                ))
                .await?;
            renewed += done.rows_affected() as usize;
        }
        Ok(renewed)
    }

    async fn bury(&self, _queue: QueueName, job: &Claimed, error: &str) -> Result<()> {
        let failures = serde_json::to_string(&job.with_failure(error))?;
        self.exec(
            "UPDATE queue_jobs SET dead = ?, ready_at = run_at, run_at = ?, errors = ?, lease_owner = NULL, \
             lease_until = NULL WHERE id = ?",
            vec![
                DEAD.into(),
                crate::now_millis().into(),
                failures.into(),
                job.id.parse::<i64>().unwrap_or(-1).into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// The live states are counted over the `dead = 0` part of the index,
    /// which is the backlog; the settled states come from the counters the
    /// triggers of migration m0007 keep, so a long history costs nothing.
    async fn stats(&self, queue: QueueName) -> Result<QueueStats> {
        let now = crate::now_millis();
        let live = Live::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT \
               SUM(CASE WHEN run_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1) THEN 1 ELSE 0 END) AS ready, \
               SUM(CASE WHEN lease_until >= ?1 THEN 1 ELSE 0 END) AS in_flight, \
               SUM(CASE WHEN run_at > ?1 AND (lease_until IS NULL OR lease_until < ?1) THEN 1 ELSE 0 END) AS retrying \
             FROM queue_jobs WHERE queue = ?2 AND dead = 0",
            [now.into(), queue.as_str().into()],
        ))
        .one(&self.db)
        .await?;
        let settled = Settled::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT state, n FROM queue_counts WHERE queue = ?",
            [queue.as_str().into()],
        ))
        .all(&self.db)
        .await?;
        let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
        let settled_n = |state: i64| {
            settled
                .iter()
                .find(|s| s.state == state)
                .map_or(0, |s| s.n.max(0) as u64)
        };
        let live = live.unwrap_or(Live {
            ready: None,
            in_flight: None,
            retrying: None,
        });
        Ok(QueueStats {
            ready: n(live.ready),
            in_flight: n(live.in_flight),
            retrying: n(live.retrying),
            dead: settled_n(DEAD),
            done: settled_n(DONE),
        })
    }

    async fn trim(&self, queue: QueueName, retention: Retention) -> Result<Trimmed> {
        let now = crate::now_millis();
        let cutoff = |age: Duration| now - age.as_millis() as i64;
        let mut done = self
            .trim_settled(queue, DONE, cutoff(retention.done))
            .await?;
        done += self.trim_beyond_cap(queue).await?;
        if queue.holds_accepted_writes() {
            return Ok(Trimmed { done, dead: 0 });
        }
        let dead = self
            .trim_settled(queue, DEAD, cutoff(retention.dead))
            .await?;
        Ok(Trimmed { done, dead })
    }

    async fn dead_jobs(&self, queue: QueueName, limit: usize) -> Result<Vec<DeadJob>> {
        let rows = Row::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT id, payload, attempt, errors, trace, run_at, enqueued_at FROM queue_jobs \
             WHERE queue = ? AND dead = 1 ORDER BY id DESC LIMIT ?",
            [queue.as_str().into(), (limit as i64).into()],
        ))
        .all(&self.db)
        .await?;
        Ok(rows.into_iter().map(dead).collect())
    }

    async fn dead_job(&self, queue: QueueName, id: &str) -> Result<Option<DeadJob>> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let row = Row::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT id, payload, attempt, errors, trace, run_at, enqueued_at FROM queue_jobs \
             WHERE id = ? AND queue = ? AND dead = 1",
            [id.into(), queue.as_str().into()],
        ))
        .one(&self.db)
        .await?;
        Ok(row.map(dead))
    }

    async fn revive(&self, queue: QueueName, id: &str) -> Result<Option<String>> {
        let Ok(row) = id.parse::<i64>() else {
            return Ok(None);
        };
        let revived = self
            .exec(
                "UPDATE queue_jobs SET dead = 0, attempt = 1, run_at = ?, lease_owner = NULL, \
                 lease_until = NULL WHERE id = ? AND queue = ? AND dead = 1",
                vec![
                    crate::now_millis().into(),
                    row.into(),
                    queue.as_str().into(),
                ],
            )
            .await?;
        self.notify();
        // The row keeps its id: the handle stays the same in every state.
        Ok((revived == 1).then(|| id.to_owned()))
    }

    async fn discard(&self, queue: QueueName, id: &str) -> Result<bool> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(false);
        };
        let deleted = self
            .exec(
                "DELETE FROM queue_jobs WHERE id = ? AND queue = ? AND dead = 1",
                vec![id.into(), queue.as_str().into()],
            )
            .await?;
        Ok(deleted == 1)
    }

    async fn retry_now(&self, queue: QueueName, id: &str) -> Result<bool> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(false);
        };
        let sql = format!(
            "UPDATE queue_jobs SET run_at = ?1 WHERE id = ?2 AND queue = ?3 AND {}",
            state_filter(JobState::Retrying)
        );
        let values = vec![crate::now_millis().into(), id.into(), queue.as_str().into()];
        let due = self.exec(&sql, values).await? == 1;
        if due {
            self.notify();
        }
        Ok(due)
    }

    /// The state's filter in the statement itself: a row claimed since the
    /// operator saw it holds a lease, and no longer matches.
    async fn cancel(&self, queue: QueueName, state: JobState, id: &str) -> Result<bool> {
        if !matches!(state, JobState::Pending | JobState::Retrying) {
            return Ok(false);
        }
        let Ok(id) = id.parse::<i64>() else {
            return Ok(false);
        };
        let sql = format!(
            "DELETE FROM queue_jobs WHERE id = ?2 AND queue = ?3 AND {}",
            state_filter(state)
        );
        let values = vec![crate::now_millis().into(), id.into(), queue.as_str().into()];
        Ok(self.exec(&sql, values).await? == 1)
    }

    async fn jobs(
        &self,
        queue: QueueName,
        state: JobState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        let now = crate::now_millis();
        let (at, id) = parse_cursor(cursor);
        let rows = AnyRow::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!(
                "SELECT {ANY_COLUMNS} FROM queue_jobs WHERE queue = ?2 AND {} \
                 AND (run_at < ?3 OR (run_at = ?3 AND id < ?4)) \
                 ORDER BY run_at DESC, id DESC LIMIT ?5",
                state_filter(state)
            ),
            [
                now.into(),
                queue.as_str().into(),
                at.into(),
                id.into(),
                (limit as i64 + 1).into(),
            ],
        ))
        .all(&self.db)
        .await?;
        let more = rows.len() > limit;
        let jobs: Vec<JobRecord> = rows
            .into_iter()
            .take(limit)
            .map(|r| record(r, now, self.lease))
            .collect();
        let next = more
            .then(|| jobs.last().map(|j| format!("{}:{}", j.at, j.id)))
            .flatten();
        Ok(JobPage { jobs, next })
    }

    /// A row keeps its id through every state, so the job is found
    /// wherever it is now.
    async fn job(&self, queue: QueueName, _state: JobState, id: &str) -> Result<Option<JobRecord>> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let row = AnyRow::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!("SELECT {ANY_COLUMNS} FROM queue_jobs WHERE id = ? AND queue = ?"),
            [id.into(), queue.as_str().into()],
        ))
        .one(&self.db)
        .await?;
        Ok(row.map(|r| record(r, crate::now_millis(), self.lease)))
    }

    async fn search(
        &self,
        queue: QueueName,
        search: &JobSearch,
        scan: usize,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        // The job id is the primary key: no scan at all.
        if let Some(id) = &search.job_id {
            let job = self.job(queue, JobState::Pending, id).await?;
            return Ok(job
                .into_iter()
                .filter(|j| search.matches(queue, j))
                .collect());
        }
        super::scan_newest(self, queue, search, scan, limit).await
    }

    fn system(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        self.db.ping().await?;
        Ok(())
    }

    async fn retire(&self, _queue: QueueName, consumer: &str) -> Result<()> {
        self.exec(
            "UPDATE queue_jobs SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = ? AND dead = 0",
            vec![consumer.into()],
        )
        .await?;
        self.notify();
        Ok(())
    }
}
