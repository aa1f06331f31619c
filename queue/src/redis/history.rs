//! What the dashboard reads and repairs on Redis: counts, pages of each
//! state, one job, revival, discarding, retry now, cancel and trimming.
use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use redis::{AsyncCommands, Value, streams::StreamId};

use super::{wire::*, *};
use crate::{
    DeadJob, JobHistory, JobPage, JobRecord, JobState, QueueName, QueueStats, Retention, Trimmed,
};
use chat_links::error::Result;

impl RedisStreamQueue {
    /// The history stream of a settled state.
    pub(super) fn settled_key(&self, q: QueueName, state: JobState) -> String {
        self.key(
            q,
            if state == JobState::Done {
                "done"
            } else {
                "dead"
            },
        )
    }

    /// The id of the newest entry handed to any consumer: entries after it
    /// were never delivered (pending), and the ones up to it still in the
    /// stream are unsettled (in flight), since a settle deletes its entry.
    pub(super) async fn last_delivered(&self, q: QueueName) -> Result<String> {
        let mut conn = self.conn.clone();
        let groups: redis::RedisResult<Vec<HashMap<String, Value>>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(self.stream_key(q))
            .query_async(&mut conn)
            .await;
        let groups = match groups {
            Ok(groups) => groups,
            // No stream yet: nothing was ever delivered.
            Err(e) if e.code() == Some("ERR") => return Ok("0-0".into()),
            Err(e) => return Err(e.into()),
        };
        let text = |v: Option<&Value>| match v {
            Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Some(Value::SimpleString(s)) => Some(s.clone()),
            _ => None,
        };
        Ok(groups
            .iter()
            .find(|g| text(g.get("name")).as_deref() == Some(GROUP))
            .and_then(|g| text(g.get("last-delivered-id")))
            .unwrap_or_else(|| "0-0".into()))
    }

    /// Up to `count` entries of `key`, newest first, from `end` down to
    /// `start` (both in XREVRANGE syntax).
    pub(super) async fn newest(
        &self,
        key: String,
        end: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<StreamId>> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply =
            conn.xrevrange_count(key, end, start, count).await?;
        Ok(reply.ids)
    }

    /// The consumer holding each in-flight entry and when it claimed it
    /// (now less the entry's idle time), in one round trip.
    pub(super) async fn holders(
        &self,
        q: QueueName,
        ids: &[&str],
    ) -> Result<Vec<Option<(String, i64)>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XPENDING")
                .arg(self.stream_key(q))
                .arg(GROUP)
                .arg(*id)
                .arg(*id)
                .arg(1);
        }
        let mut conn = self.conn.clone();
        let pending: Vec<Vec<(String, String, u64, u64)>> = pipe.query_async(&mut conn).await?;
        let now = chat_links::now_millis();
        Ok(pending
            .into_iter()
            .map(|p| {
                p.into_iter()
                    .next()
                    .map(|(_, consumer, idle, _)| (consumer, now - idle as i64))
            })
            .collect())
    }

    pub(super) async fn retrying_page(
        &self,
        q: QueueName,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        // The cursor is the last due time shown and how many members with
        // exactly that due time were shown, so ties are neither skipped nor
        // repeated.
        let (max, skip) = cursor
            .and_then(|c| c.split_once(':'))
            .and_then(|(due, skip)| Some((due.parse::<i64>().ok()?, skip.parse::<usize>().ok()?)))
            .map_or(("+inf".to_owned(), 0), |(due, skip)| {
                (due.to_string(), skip)
            });
        let mut conn = self.conn.clone();
        let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.key(q, "retry"))
            .arg(&max)
            .arg("-inf")
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(skip)
            .arg(limit + 1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let more = members.len() > limit;
        let jobs = members
            .iter()
            .take(limit)
            .map(|(m, due)| decode_retrying(m, *due as i64))
            .collect::<Result<Vec<_>>>()?;
        let next = match (more, jobs.last()) {
            (true, Some(last)) => {
                let same = jobs.iter().filter(|j| j.at == last.at).count();
                let carried = if max == last.at.to_string() { skip } else { 0 };
                Some(format!("{}:{}", last.at, same + carried))
            }
            _ => None,
        };
        Ok(JobPage { jobs, next })
    }
}

#[async_trait]
impl JobHistory for RedisStreamQueue {
    async fn stats(&self, queue: QueueName) -> Result<QueueStats> {
        match self.counted(queue).await {
            // Made again, the counts are read once more.
            Err(e) if self.forgot_vanished_group(queue, &e) => self.counted(queue).await,
            other => other,
        }
    }

    async fn trim(&self, queue: QueueName, retention: Retention) -> Result<Trimmed> {
        let now = chat_links::now_millis();
        let cutoff = |age: Duration| (now - age.as_millis() as i64).max(0);
        let mut conn = self.conn.clone();
        // Exact MINID, not `~`: an approximate trim keeps whole radix nodes,
        // so records past their retention could linger indefinitely.
        let done: u64 = redis::cmd("XTRIM")
            .arg(self.key(queue, "done"))
            .arg("MINID")
            .arg(cutoff(retention.done))
            .query_async(&mut conn)
            .await?;
        if queue.holds_accepted_writes() {
            return Ok(Trimmed { done, dead: 0 });
        }
        let dead: u64 = redis::cmd("XTRIM")
            .arg(self.key(queue, "dead"))
            .arg("MINID")
            .arg(cutoff(retention.dead))
            .query_async(&mut conn)
            .await?;
        Ok(Trimmed { done, dead })
    }

    async fn dead_jobs(&self, queue: QueueName, limit: usize) -> Result<Vec<DeadJob>> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = conn
            .xrevrange_count(self.key(queue, "dead"), "+", "-", limit)
            .await?;
        reply.ids.iter().map(decode_dead).collect()
    }

    async fn dead_job(&self, queue: QueueName, id: &str) -> Result<Option<DeadJob>> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply =
            conn.xrange(self.key(queue, "dead"), id, id).await?;
        reply.ids.first().map(decode_dead).transpose()
    }

    async fn revive(&self, queue: QueueName, id: &str) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        let revived: Option<String> = self
            .scripts
            .revive
            .key(self.stream_key(queue))
            .key(self.key(queue, "dead"))
            .arg(id)
            .invoke_async(&mut conn)
            .await?;
        Ok(revived)
    }

    async fn discard(&self, queue: QueueName, id: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let deleted: i64 = conn.xdel(self.key(queue, "dead"), &[id]).await?;
        Ok(deleted == 1)
    }

    async fn retry_now(&self, queue: QueueName, id: &str) -> Result<bool> {
        self.take_retry(queue, id, true).await
    }

    async fn cancel(&self, queue: QueueName, state: JobState, id: &str) -> Result<bool> {
        match state {
            JobState::Pending if is_entry_id(id) => {
                let mut conn = self.conn.clone();
                let deleted: i64 = self
                    .scripts
                    .cancel_pending
                    .key(self.stream_key(queue))
                    .arg(GROUP)
                    .arg(id)
                    .invoke_async(&mut conn)
                    .await?;
                Ok(deleted == 1)
            }
            JobState::Retrying => self.take_retry(queue, id, false).await,
            _ => Ok(false),
        }
    }

    async fn jobs(
        &self,
        queue: QueueName,
        state: JobState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        let after = |default: &str| cursor.map_or(default.to_owned(), |c| format!("({c}"));
        let entries = match state {
            JobState::Retrying => return self.retrying_page(queue, cursor, limit).await,
            JobState::Pending => {
                let delivered = self.last_delivered(queue).await?;
                let ids = self
                    .newest(
                        self.stream_key(queue),
                        &after("+"),
                        &format!("({delivered}"),
                        limit + 1,
                    )
                    .await?;
                ids.iter()
                    .map(|e| decode_live(e, state, None))
                    .collect::<Result<Vec<_>>>()?
            }
            JobState::InFlight => {
                let delivered = self.last_delivered(queue).await?;
                if delivered == "0-0" {
                    return Ok(JobPage::default());
                }
                let end = match cursor {
                    Some(c) if id_order(c) <= id_order(&delivered) => format!("({c}"),
                    _ => delivered,
                };
                let ids = self
                    .newest(self.stream_key(queue), &end, "-", limit + 1)
                    .await?;
                let shown: Vec<&str> = ids.iter().take(limit).map(|e| e.id.as_str()).collect();
                let holders = self.holders(queue, &shown).await?;
                ids.iter()
                    .zip(holders.into_iter().chain(std::iter::repeat(None)))
                    .map(|(e, worker)| decode_live(e, state, worker))
                    .collect::<Result<Vec<_>>>()?
            }
            JobState::Done | JobState::Dead => {
                let key = self.settled_key(queue, state);
                let ids = self.newest(key, &after("+"), "-", limit + 1).await?;
                ids.iter()
                    .map(|e| decode_settled(e, state))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        let mut jobs = entries;
        let more = jobs.len() > limit;
        jobs.truncate(limit);
        let next = more.then(|| jobs.last().map(|j| j.id.clone())).flatten();
        Ok(JobPage { jobs, next })
    }

    async fn job(&self, queue: QueueName, state: JobState, id: &str) -> Result<Option<JobRecord>> {
        let mut conn = self.conn.clone();
        match state {
            JobState::Pending | JobState::InFlight => {
                let reply: redis::streams::StreamRangeReply =
                    conn.xrange(self.stream_key(queue), id, id).await?;
                let Some(entry) = reply.ids.first() else {
                    return Ok(None);
                };
                let delivered = self.last_delivered(queue).await?;
                if id_order(&entry.id) > id_order(&delivered) {
                    return decode_live(entry, JobState::Pending, None).map(Some);
                }
                let worker = self
                    .holders(queue, &[entry.id.as_str()])
                    .await?
                    .pop()
                    .flatten();
                decode_live(entry, JobState::InFlight, worker).map(Some)
            }
            JobState::Retrying => {
                let Some((due, job_id)) = retry_handle(id) else {
                    return Ok(None);
                };
                let members: Vec<String> = redis::cmd("ZRANGE")
                    .arg(self.key(queue, "retry"))
                    .arg(due)
                    .arg(due)
                    .arg("BYSCORE")
                    .query_async(&mut conn)
                    .await?;
                for m in members {
                    let job = decode_retrying(&m, due)?;
                    if job.job_id == job_id {
                        return Ok(Some(job));
                    }
                }
                Ok(None)
            }
            JobState::Done | JobState::Dead => {
                let key = self.settled_key(queue, state);
                let reply: redis::streams::StreamRangeReply = conn.xrange(key, id, id).await?;
                reply
                    .ids
                    .first()
                    .map(|e| decode_settled(e, state))
                    .transpose()
            }
        }
    }

    fn system(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

impl RedisStreamQueue {
    /// The counts of `queue`, its group made first if it is not known here.
    async fn counted(&self, queue: QueueName) -> Result<QueueStats> {
        self.ensure_group(queue).await?;
        let mut conn = self.conn.clone();
        let (len, pending, retrying, dead, done): (u64, Value, u64, u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(self.stream_key(queue))
            .cmd("XPENDING")
            .arg(self.stream_key(queue))
            .arg(GROUP)
            .cmd("ZCARD")
            .arg(self.key(queue, "retry"))
            .cmd("XLEN")
            .arg(self.key(queue, "dead"))
            .cmd("XLEN")
            .arg(self.key(queue, "done"))
            .query_async(&mut conn)
            .await?;
        let in_flight = match pending {
            Value::Array(items) => match items.first() {
                Some(Value::Int(n)) => *n as u64,
                _ => 0,
            },
            _ => 0,
        };
        Ok(QueueStats {
            ready: len.saturating_sub(in_flight),
            in_flight,
            retrying,
            dead,
            done,
        })
    }
}
