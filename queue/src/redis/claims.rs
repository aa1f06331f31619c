//! The steps of the worker protocol on Redis: the consumer group, claims
//! and takeovers of expired leases, and retries and their promotion.
//!
//! The steps of a claim hand a cluster node's refusal back at once
//! (`RedisConn::impatient`): the caller claims again soon anyway, and a
//! sharded claim has the other shards to read meanwhile.
use std::time::{Duration, Instant};

use redis::streams::{StreamAutoClaimReply, StreamReadReply};

use super::{wire::*, *};
use crate::{Claimed, QueueName};
use chat_links::{StoreError, error::Result, redis_link};

impl RedisStreamQueue {
    pub(super) async fn ensure_group(&self, q: QueueName) -> Result<()> {
        if self
            .groups
            .lock()
            .unwrap()
            .get(&q)
            .copied()
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut conn = self.conn.impatient();
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.stream_key(q))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        self.groups.lock().unwrap().insert(q, true);
        Ok(())
    }

    /// Whether `e` says that `q`'s group is gone since it was made here
    /// (its creation lost in a failover, a FLUSHALL, the key deleted); if
    /// so, the next call that needs it makes it again.
    pub(super) fn forgot_vanished_group(&self, q: QueueName, e: &StoreError) -> bool {
        let vanished = is_missing_group(e);
        if vanished {
            self.groups.lock().unwrap().remove(&q);
        }
        vanished
    }

    pub(super) async fn reader(&self, consumer: &str, wait: Duration) -> Result<RedisConn> {
        if let Some(c) = self.readers.lock().unwrap().get(consumer) {
            return Ok(c.clone());
        }
        let conn = redis_link::dedicated(&self.client, wait).await?.impatient();
        self.readers
            .lock()
            .unwrap()
            .insert(consumer.to_owned(), conn.clone());
        Ok(conn)
    }

    /// Whether this consumer should look for expired claims and due retries
    /// now. Rate-limited so an idle pool does not scan on every read.
    pub(super) fn sweep_due(&self, q: QueueName, consumer: &str) -> bool {
        let every = (self.claim_idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut last = self.last_sweep.lock().unwrap();
        let key = (q, consumer.to_owned());
        match last.get(&key) {
            Some(t) if t.elapsed() < every => false,
            _ => {
                last.insert(key, Instant::now());
                true
            }
        }
    }

    /// Removes consumers that own no pending entries and have been idle for
    /// `prune_idle`: each worker start registers a new name, and without
    /// this the group would list every process that ever ran. Runs at most
    /// once a minute per queue and process. A live consumer removed here is
    /// re-created by its next read, having owned nothing.
    pub(super) async fn prune_consumers(&self, q: QueueName) -> Result<()> {
        {
            let mut last = self.last_prune.lock().unwrap();
            let every = self.prune_idle.min(Duration::from_secs(60));
            if last.get(&q).is_some_and(|t| t.elapsed() < every) {
                return Ok(());
            }
            last.insert(q, Instant::now());
        }
        let mut conn = self.conn.impatient();
        let _: i64 = self
            .scripts
            .prune
            .key(self.stream_key(q))
            .arg(GROUP)
            .arg(self.prune_idle.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    pub(super) async fn promote_due(&self, q: QueueName) -> Result<()> {
        let mut conn = self.conn.impatient();
        loop {
            let moved: usize = self
                .scripts
                .promote
                .key(self.stream_key(q))
                .key(self.key(q, "retry"))
                .arg(chat_links::now_millis())
                .arg(PROMOTE_CHUNK)
                .invoke_async(&mut conn)
                .await?;
            if moved < PROMOTE_CHUNK {
                return Ok(());
            }
        }
    }

    /// Moves each job to the retry set, due after `delay`, as the member
    /// it becomes: its payload, the attempt it will run as, and its
    /// failures.
    pub(super) async fn later(
        &self,
        queue: QueueName,
        jobs: &[(&Claimed, u32, String)],
        delay: Duration,
    ) -> Result<()> {
        let due = chat_links::now_millis() + delay.as_millis() as i64;
        let mut call = self.scripts.later.key(self.stream_key(queue));
        call.key(self.key(queue, "retry")).arg(GROUP);
        for (job, attempt, failures) in jobs {
            let member = serde_json::to_string(&RetryMember {
                p: &job.payload,
                a: attempt.to_string(),
                f: failures.clone(),
                t: job.trace.as_deref(),
                e: job.enqueued_at.to_string(),
                u: &job.id,
            })?;
            call.arg(&job.id).arg(due).arg(member);
        }
        let mut conn = self.conn.clone();
        let _: i64 = call.invoke_async(&mut conn).await?;
        Ok(())
    }

    /// Takes the retrying job `id` names out of the retry set, appending it
    /// to the stream when `now`; `false` when it waits there no longer.
    pub(super) async fn take_retry(&self, queue: QueueName, id: &str, now: bool) -> Result<bool> {
        let Some((due, job_id)) = retry_handle(id) else {
            return Ok(false);
        };
        let mut conn = self.conn.clone();
        let taken: i64 = self
            .scripts
            .take_retry
            .key(self.stream_key(queue))
            .key(self.key(queue, "retry"))
            .arg(due)
            .arg(job_id)
            .arg(if now { "now" } else { "" })
            .invoke_async(&mut conn)
            .await?;
        Ok(taken == 1)
    }

    pub(super) async fn take_over_expired(
        &self,
        q: QueueName,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Claimed>> {
        let mut conn = self.conn.impatient();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(self.stream_key(q))
            .arg(GROUP)
            .arg(consumer)
            .arg(self.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await?;
        if reply.claimed.is_empty() {
            return Ok(Vec::new());
        }
        tracing::warn!(
            queue = q.as_str(),
            consumer,
            jobs = reply.claimed.len(),
            "took over jobs whose consumer stopped settling them"
        );
        // Each delivery that ended without a settle (its worker died while
        // holding the job) counts as an attempt, so a job that kills its
        // worker every time still runs out of attempts.
        let mut pipe = redis::pipe();
        for entry in &reply.claimed {
            pipe.cmd("XPENDING")
                .arg(self.stream_key(q))
                .arg(GROUP)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1);
        }
        let pending: Vec<Vec<(String, String, u64, u64)>> = pipe.query_async(&mut conn).await?;
        reply
            .claimed
            .iter()
            .zip(pending)
            .map(|(entry, info)| {
                let mut job = decode_entry(entry, consumer)?;
                let delivered = info.first().map(|p| p.3).unwrap_or(1).max(1) as u32;
                job.attempt += delivered - 1;
                Ok(job)
            })
            .collect()
    }

    pub(super) async fn read_new(
        &self,
        q: QueueName,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>> {
        let mut conn = self.reader(consumer, wait).await?;
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(max);
        // No wait means no BLOCK at all: Redis notices a blocked read's
        // timeout only when its event loop wakes, up to 100 ms (hz 10) on
        // an idle server, so even `BLOCK 1` could stall a look at an empty
        // shard that long.
        if !wait.is_zero() {
            read.arg("BLOCK").arg(wait.as_millis().max(1) as u64);
        }
        let reply: redis::RedisResult<Option<StreamReadReply>> = read
            .arg("STREAMS")
            .arg(self.stream_key(q))
            .arg(">")
            .query_async(&mut conn)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                // This connection is dedicated and never reconnects by
                // itself: after any failure, the next read opens a new one.
                self.readers.lock().unwrap().remove(consumer);
                return Err(e.into());
            }
        };
        let Some(reply) = reply else {
            return Ok(Vec::new());
        };
        reply
            .keys
            .iter()
            .flat_map(|k| k.ids.iter())
            .map(|e| decode_entry(e, consumer))
            .collect()
    }
}
