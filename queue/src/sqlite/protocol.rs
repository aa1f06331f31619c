//! The worker protocol on the SQLite table.
use std::time::Duration;

use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use super::*;
use crate::{Claimed, JobQueue, QueueName};

#[async_trait]
impl JobQueue for SqliteQueue {
    async fn enqueue_traced(
        &self,
        queue: QueueName,
        payload: String,
        trace: Option<String>,
    ) -> Result<()> {
        Self::insert(&self.writer, queue, payload, trace.as_deref()).await?;
        self.notify(queue);
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
            let pushed = self.pushed(queue);
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
            values.insert(0, chat_links::now_millis().into());
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
        let run_at = chat_links::now_millis() + delay.as_millis() as i64;
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

    async fn defer(&self, queue: QueueName, jobs: &[Claimed], delay: Duration) -> Result<()> {
        let run_at = chat_links::now_millis() + delay.as_millis() as i64;
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
        self.notify(queue);
        Ok(())
    }

    async fn renew(&self, _queue: QueueName, consumer: &str, ids: &[String]) -> Result<usize> {
        let until = chat_links::now_millis() + self.lease.as_millis() as i64;
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
                chat_links::now_millis().into(),
                failures.into(),
                job.id.parse::<i64>().unwrap_or(-1).into(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn retire(&self, _queue: QueueName, consumer: &str) -> Result<()> {
        self.exec(
            "UPDATE queue_jobs SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = ? AND dead = 0",
            vec![consumer.into()],
        )
        .await?;
        // The statement frees the consumer's leases in whatever queue.
        for queue in QueueName::ALL {
            self.notify(queue);
        }
        Ok(())
    }
}
