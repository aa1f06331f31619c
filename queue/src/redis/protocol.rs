//! The worker protocol on Redis, over the steps in `claims`.
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::{wire::*, *};
use crate::{Claimed, JobQueue, QueueName};
use chat_links::error::Result;

#[async_trait]
impl JobQueue for RedisStreamQueue {
    async fn enqueue_traced(
        &self,
        queue: QueueName,
        payload: String,
        trace: Option<String>,
    ) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut fields = vec![(field::PAYLOAD, payload.as_str())];
        if let Some(trace) = &trace {
            fields.push((field::TRACE, trace.as_str()));
        }
        let _: String = conn.xadd(self.stream_key(queue), "*", &fields).await?;
        Ok(())
    }

    async fn claim(
        &self,
        queue: QueueName,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>> {
        self.ensure_group(queue).await?;
        if self.sweep_due(queue, consumer) {
            self.promote_due(queue).await?;
            if let Err(e) = self.prune_consumers(queue).await {
                tracing::debug!(queue = queue.as_str(), error = %e, "consumer pruning failed");
            }
            let taken = self.take_over_expired(queue, consumer, max).await;
            match taken {
                Ok(jobs) if !jobs.is_empty() => return Ok(jobs),
                Ok(_) => {}
                // Made again on the next call.
                Err(e) if self.forgot_vanished_group(queue, &e) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
        match self.read_new(queue, consumer, max, wait).await {
            Err(e) if self.forgot_vanished_group(queue, &e) => Ok(Vec::new()),
            other => other,
        }
    }

    async fn ack(&self, queue: QueueName, jobs: &[Claimed]) -> Result<()> {
        let mut conn = self.conn.clone();
        for chunk in jobs.chunks(500) {
            let mut call = self.scripts.ack.key(self.stream_key(queue));
            call.key(self.key(queue, "done"))
                .arg(GROUP)
                .arg(self.done_cap);
            let keep = self.done_cap > 0;
            for job in chunk {
                call.arg(&job.id);
                if !keep {
                    // Nothing is recorded: the script only needs the ids.
                    call.arg(&[""; { DONE_RECORD.len() }][..]);
                    continue;
                }
                let failures = if job.failures.is_empty() {
                    String::new()
                } else {
                    serde_json::to_string(&job.failures)?
                };
                let fields: [&str; DONE_RECORD.len()] = [
                    cut(&job.payload, DONE_PAYLOAD_MAX),
                    &job.attempt.to_string(),
                    &failures,
                    job.trace.as_deref().unwrap_or(""),
                    &job.enqueued_at.to_string(),
                    &job.worker,
                    &job.claimed_at.to_string(),
                    &job.ready_at.to_string(),
                ];
                call.arg(&fields[..]);
            }
            let _: i64 = call.invoke_async(&mut conn).await?;
        }
        Ok(())
    }

    async fn retry(
        &self,
        queue: QueueName,
        job: &Claimed,
        error: &str,
        delay: Duration,
    ) -> Result<()> {
        let failures = serde_json::to_string(&job.with_failure(error))?;
        self.later(queue, &[(job, job.attempt + 1, failures)], delay)
            .await
    }

    async fn defer(&self, queue: QueueName, jobs: &[Claimed], delay: Duration) -> Result<()> {
        let mut later = Vec::with_capacity(jobs.len());
        for job in jobs {
            let failures = serde_json::to_string(&job.failures)?;
            later.push((job, job.attempt, failures));
        }
        for chunk in later.chunks(500) {
            self.later(queue, chunk, delay).await?;
        }
        Ok(())
    }

    async fn renew(&self, queue: QueueName, consumer: &str, ids: &[String]) -> Result<usize> {
        let mut renewed = 0;
        let mut conn = self.conn.clone();
        for chunk in ids.chunks(500) {
            let mut call = self.scripts.renew.key(self.stream_key(queue));
            call.arg(GROUP).arg(consumer).arg(chunk);
            let n: usize = call.invoke_async(&mut conn).await?;
            renewed += n;
        }
        Ok(renewed)
    }

    async fn bury(&self, queue: QueueName, job: &Claimed, error: &str) -> Result<()> {
        let failures = serde_json::to_string(&job.with_failure(error))?;
        let mut conn = self.conn.clone();
        let _: i64 = self
            .scripts
            .bury
            .key(self.stream_key(queue))
            .key(self.key(queue, "dead"))
            .arg(GROUP)
            .arg(&job.id)
            .arg(
                &[
                    field::PAYLOAD,
                    job.payload.as_str(),
                    field::ATTEMPT,
                    &job.attempt.to_string(),
                    field::FAILURES,
                    &failures,
                    field::TRACE,
                    job.trace.as_deref().unwrap_or(""),
                    field::ENQUEUED,
                    &job.enqueued_at.to_string(),
                ][..],
            )
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn retire(&self, queue: QueueName, consumer: &str) -> Result<()> {
        self.readers.lock().unwrap().remove(consumer);
        let mut conn = self.conn.clone();
        loop {
            let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(self.stream_key(queue))
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(500)
                .arg(consumer)
                .query_async(&mut conn)
                .await?;
            if pending.is_empty() {
                return Ok(());
            }
            // Deleting the consumer would drop these entries from the group
            // for good; re-append them instead, for any consumer to read at
            // once. The empty consumer itself is pruned later.
            let mut call = self.scripts.handback.key(self.stream_key(queue));
            call.arg(GROUP);
            for (id, ..) in &pending {
                call.arg(id);
            }
            let _: i64 = call.invoke_async(&mut conn).await?;
            tracing::info!(
                queue = queue.as_str(),
                consumer,
                jobs = pending.len(),
                "handed back unstarted jobs"
            );
            if pending.len() < 500 {
                return Ok(());
            }
        }
    }
}
