//! The job queue as a SQLite table, for the embedded profile.
//!
//! A job's payload is a row of `queue_payloads` with the job's id (see
//! migration m0011): a claim and an ack rewrite a job's row, and a payload
//! in it, several KiB for an index job, went with every rewrite.
//! Jobs go in through the view `queue_jobs_with_payload`, one statement
//! for both rows; a trigger deletes the payload with its job.
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
//! [`JobHistory::trim`] keeps the history itself bounded.
use std::{sync::Arc, time::Duration};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement, Value};
use tokio::sync::{Notify, futures::Notified};

use crate::{Claimed, QueueName};
use chat_links::error::Result;

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
    /// Wakes consumers of a queue in this process as soon as one of its
    /// jobs is committed, one per [`QueueName`]: an intake commit on the
    /// embedded profile, many a second, enqueues index jobs only, and
    /// waking the other queues' claims would cost each an empty claim on
    /// the one SQLite writer the intake commits through.
    pushed: [Notify; QueueName::ALL.len()],
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

/// A job's payload, from the table that keeps it apart (migration m0011),
/// as the column `payload` of a statement on `queue_jobs`.
macro_rules! payload_column {
    () => {
        "COALESCE((SELECT p.payload FROM queue_payloads p WHERE p.id = queue_jobs.id), '') \
         AS payload"
    };
}

mod history;
mod protocol;
mod rows;

impl SqliteQueue {
    pub fn new(db: DatabaseConnection, writer: DatabaseConnection, lease: Duration) -> Arc<Self> {
        Arc::new(Self {
            db,
            writer,
            lease,
            done_cap: 10_000,
            pushed: std::array::from_fn(|_| Notify::new()),
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
    pub async fn insert(
        conn: &impl ConnectionTrait,
        queue: QueueName,
        payload: String,
        trace: Option<&str>,
    ) -> Result<()> {
        Self::insert_many(conn, queue, vec![(payload, trace.map(str::to_owned))]).await
    }

    /// Inserts one job per `(payload, trace)` in one statement, inside the
    /// caller's transaction; call [`Self::notify`] after it commits. The
    /// view's trigger writes each job's row and its payload's (m0011).
    pub async fn insert_many(
        conn: &impl ConnectionTrait,
        queue: QueueName,
        jobs: Vec<(String, Option<String>)>,
    ) -> Result<()> {
        // 5 values a row, well under SQLite's 32,766 bound per statement.
        const ROWS: usize = 1_000;
        let now = chat_links::now_millis();
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let chunk: Vec<_> = jobs.by_ref().take(ROWS).collect();
            let rows = vec!["(?, ?, 1, ?, 0, '[]', ?, ?)"; chunk.len()].join(", ");
            let mut values = Vec::with_capacity(chunk.len() * 5);
            for (payload, trace) in chunk {
                values.extend([
                    queue.as_str().into(),
                    payload.into(),
                    now.into(),
                    now.into(),
                    trace.into(),
                ]);
            }
            conn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                format!(
                    "INSERT INTO queue_jobs_with_payload \
                       (queue, payload, attempt, run_at, dead, errors, enqueued_at, trace) \
                     VALUES {rows}"
                ),
                values,
            ))
            .await?;
        }
        Ok(())
    }

    /// Wakes the claims that wait for new jobs of `queue`.
    pub fn notify(&self, queue: QueueName) {
        self.pushed[queue as usize].notify_waiters();
    }

    /// Completes at the next [`Self::notify`] of `queue` after this call,
    /// even if not polled before it.
    pub fn pushed(&self, queue: QueueName) -> Notified<'_> {
        self.pushed[queue as usize].notified()
    }

    async fn try_claim(
        &self,
        queue: QueueName,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Claimed>> {
        let now = chat_links::now_millis();
        let until = now + self.lease.as_millis() as i64;
        let rows = Row::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            // A row still carrying a lease owner was claimed before and never
            // settled (its worker died): that delivery counts as an attempt.
            concat!(
                "UPDATE queue_jobs SET attempt = attempt + (lease_owner IS NOT NULL), \
                   lease_owner = ?, lease_until = ? WHERE id IN ( \
                   SELECT id FROM queue_jobs WHERE queue = ? AND dead = 0 AND run_at <= ? \
                   AND (lease_until IS NULL OR lease_until < ?) ORDER BY id LIMIT ?) \
                 RETURNING id, ",
                payload_column!(),
                ", attempt, errors, trace, run_at, enqueued_at"
            ),
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
