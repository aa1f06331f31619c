//! The job queue as one SQLite table, for the embedded profile.
//!
//! A claim is one `UPDATE … RETURNING` that leases up to N ready rows; an
//! ack deletes them. The table therefore holds only live and dead work,
//! and claim cost does not grow with the number of jobs ever handled (the
//! decay measured in apalis-sqlite 1.0.0).
use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement, Value};
use tokio::sync::Notify;

use super::{Claimed, DeadJob, Failure, JobQueue, QueueName, QueueStats};
use crate::error::Result;

/// How often an idle consumer looks again when nothing woke it: the
/// fallback for writers in another process.
const IDLE_POLL: Duration = Duration::from_millis(100);

pub struct SqliteQueue {
    /// Counts and listings.
    db: DatabaseConnection,
    /// Every statement that changes the table.
    writer: DatabaseConnection,
    lease: Duration,
    /// Wakes consumers in this process as soon as a job is committed.
    pushed: Arc<Notify>,
}

#[derive(FromQueryResult)]
struct Row {
    id: i64,
    payload: String,
    attempt: i32,
    errors: String,
}

#[derive(FromQueryResult)]
struct Counts {
    ready: Option<i64>,
    in_flight: Option<i64>,
    retrying: Option<i64>,
    dead: Option<i64>,
}

impl SqliteQueue {
    pub fn new(db: DatabaseConnection, writer: DatabaseConnection, lease: Duration) -> Arc<Self> {
        Arc::new(Self {
            db,
            writer,
            lease,
            pushed: Arc::new(Notify::new()),
        })
    }

    /// Inserts a job inside the caller's transaction; call [`Self::notify`]
    /// after it commits.
    pub(crate) async fn insert(
        conn: &impl ConnectionTrait,
        queue: QueueName,
        payload: String,
    ) -> Result<()> {
        let now = crate::now_millis();
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT INTO queue_jobs (queue, payload, attempt, run_at, dead, errors, enqueued_at) \
             VALUES (?, ?, 1, ?, 0, '[]', ?)",
            [
                queue.as_str().into(),
                payload.into(),
                now.into(),
                now.into(),
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
             RETURNING id, payload, attempt, errors",
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
            })
            .collect();
        // RETURNING gives no order guarantee; keep enqueue order.
        jobs.sort_by_key(|j| j.id.parse::<i64>().unwrap_or(0));
        Ok(jobs)
    }

    async fn exec(&self, sql: &str, values: Vec<Value>) -> Result<()> {
        self.writer
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                sql,
                values,
            ))
            .await?;
        Ok(())
    }
}

#[async_trait]
impl JobQueue for SqliteQueue {
    async fn enqueue(&self, queue: QueueName, payload: String) -> Result<()> {
        Self::insert(&self.writer, queue, payload).await?;
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

    async fn ack(&self, _queue: QueueName, ids: &[String]) -> Result<()> {
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let values = chunk
                .iter()
                .map(|id| id.parse::<i64>().unwrap_or(-1).into())
                .collect();
            self.exec(
                &format!("DELETE FROM queue_jobs WHERE id IN ({marks})"),
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
        .await
    }

    async fn bury(&self, _queue: QueueName, job: &Claimed, error: &str) -> Result<()> {
        let failures = serde_json::to_string(&job.with_failure(error))?;
        self.exec(
            "UPDATE queue_jobs SET dead = 1, errors = ?, lease_owner = NULL, lease_until = NULL \
             WHERE id = ?",
            vec![failures.into(), job.id.parse::<i64>().unwrap_or(-1).into()],
        )
        .await
    }

    async fn stats(&self, queue: QueueName) -> Result<QueueStats> {
        let now = crate::now_millis();
        let c = Counts::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT \
               SUM(CASE WHEN dead = 0 AND run_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1) THEN 1 ELSE 0 END) AS ready, \
               SUM(CASE WHEN dead = 0 AND lease_until >= ?1 THEN 1 ELSE 0 END) AS in_flight, \
               SUM(CASE WHEN dead = 0 AND run_at > ?1 AND (lease_until IS NULL OR lease_until < ?1) THEN 1 ELSE 0 END) AS retrying, \
               SUM(CASE WHEN dead = 1 THEN 1 ELSE 0 END) AS dead \
             FROM queue_jobs WHERE queue = ?2",
            [now.into(), queue.as_str().into()],
        ))
        .one(&self.db)
        .await?;
        let c = c.unwrap_or(Counts {
            ready: None,
            in_flight: None,
            retrying: None,
            dead: None,
        });
        let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
        Ok(QueueStats {
            ready: n(c.ready),
            in_flight: n(c.in_flight),
            retrying: n(c.retrying),
            dead: n(c.dead),
        })
    }

    async fn dead_jobs(&self, queue: QueueName, limit: usize) -> Result<Vec<DeadJob>> {
        let rows = Row::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT id, payload, attempt, errors FROM queue_jobs \
             WHERE queue = ? AND dead = 1 ORDER BY id DESC LIMIT ?",
            [queue.as_str().into(), (limit as i64).into()],
        ))
        .all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| DeadJob {
                id: r.id.to_string(),
                payload: r.payload,
                attempt: r.attempt.max(0) as u32,
                failures: serde_json::from_str::<Vec<Failure>>(&r.errors).unwrap_or_default(),
            })
            .collect())
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
