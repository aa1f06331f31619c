//! Many shards of a queue, used as one: what a Redis Cluster deployment's
//! roles hold.
//!
//! Each shard is a whole queue (its own stream, retry set, dead and done
//! records, on its own slot), so every guarantee of one queue holds per
//! shard: at-least-once, takeovers, retries, history. This type only
//! routes:
//! - a job's handle names its shard, `<k>.<handle in the shard>`, so
//!   settling, renewing and every repair reach the shard that holds it;
//! - a claim takes an even share from every shard, then the rest from
//!   those that had more, starting one shard further each time, so one
//!   busy shard cannot starve the others; with all empty it
//!   blocks on one shard a slice at a time, so a job on any shard is seen
//!   within [`IDLE_SLICE`]; a shard that fails (its master down) costs
//!   the claim only that shard's share, never the jobs the others
//!   delivered, and then sits out claims for a while (`rests`), so that
//!   the others' claims do not wait on it every time;
//! - settles and renewals reach every shard they name, whichever fails;
//! - counts add up, and pages run through the shards one after another
//!   (the cursor names the shard and the position in it).
//!
//! The set of shards only grows ([`ShardedQueue::grow`]): a shard keeps
//! being consumed after the configured count shrinks, since applications
//! homed on it still write there, and its backlog must drain.
use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;

use crate::{
    Claimed, DeadJob, JobHistory, JobPage, JobQueue, JobRecord, JobState, QueueName, QueueStats,
    Retention, Trimmed,
};
use chat_links::error::Result;

mod rests;
use rests::Rests;

/// Separates the shard from the handle within it.
const SEP: char = '.';
/// Longest a claim blocks on one shard when all are empty: how late a job
/// on another shard may be noticed by an idle consumer.
const IDLE_SLICE: Duration = Duration::from_millis(25);

/// Opens shard `k`.
pub type OpenShard<Q> = Box<dyn Fn(u16) -> Arc<Q> + Send + Sync>;

pub struct ShardedQueue<Q> {
    shards: RwLock<Vec<Arc<Q>>>,
    open: OpenShard<Q>,
    turn: AtomicUsize,
    rests: Rests,
}

/// `<k>.<handle>`: a dot, which URLs and forms carry as it is.
fn handle(k: usize, inner: &str) -> String {
    format!("{k}{SEP}{inner}")
}

/// The shard and the handle within it that `id` names.
fn split(id: &str) -> Option<(usize, &str)> {
    let (k, inner) = id.split_once(SEP)?;
    Some((k.parse().ok()?, inner))
}

/// Settles and renewals go to every shard even when one fails, so a
/// shard that is down holds up only its own jobs; the caller retries the
/// whole call, which the shards that took it the first time take again
/// as a no-op.
fn keep_first_error(outcome: &mut Result<()>, this: Result<()>) {
    if let (Ok(()), Err(e)) = (&*outcome, this) {
        *outcome = Err(e);
    }
}

fn claimed_in(k: usize, mut job: Claimed) -> Claimed {
    job.id = handle(k, &job.id);
    job
}

fn record_in(k: usize, mut job: JobRecord) -> JobRecord {
    job.id = handle(k, &job.id);
    job.job_id = handle(k, &job.job_id);
    job
}

fn dead_in(k: usize, mut job: DeadJob) -> DeadJob {
    job.id = handle(k, &job.id);
    job.job_id = handle(k, &job.job_id);
    job
}

impl<Q: JobQueue> ShardedQueue<Q> {
    /// Shards `0..count` (at least one), each opened by `open`.
    pub fn new(count: u16, open: OpenShard<Q>) -> Arc<Self> {
        let shards = (0..count.max(1)).map(&open).collect();
        Arc::new(Self {
            shards: RwLock::new(shards),
            open,
            turn: AtomicUsize::new(0),
            rests: Rests::default(),
        })
    }

    /// Opens shards up to `count`; never closes one.
    pub fn grow(&self, count: u16) {
        let mut shards = self.shards.write().unwrap();
        while shards.len() < count as usize {
            let k = shards.len() as u16;
            tracing::info!(shard = k, "consuming a new queue shard");
            shards.push((self.open)(k));
        }
    }

    pub fn count(&self) -> usize {
        self.shards.read().unwrap().len()
    }

    fn all(&self) -> Vec<Arc<Q>> {
        self.shards.read().unwrap().clone()
    }

    fn get(&self, k: usize) -> Option<Arc<Q>> {
        self.shards.read().unwrap().get(k).cloned()
    }

    /// The jobs of each shard, with the handles the shard knows them by.
    fn by_shard(&self, jobs: &[Claimed]) -> Vec<(Arc<Q>, Vec<Claimed>)> {
        let mut groups: Vec<(usize, Vec<Claimed>)> = Vec::new();
        for job in jobs {
            let Some((k, inner)) = split(&job.id) else {
                tracing::warn!(id = job.id, "a job handle names no shard; left alone");
                continue;
            };
            let mut job = job.clone();
            job.id = inner.to_owned();
            match groups.iter_mut().find(|(g, _)| *g == k) {
                Some((_, group)) => group.push(job),
                None => groups.push((k, vec![job])),
            }
        }
        groups
            .into_iter()
            .filter_map(|(k, jobs)| Some((self.get(k)?, jobs)))
            .collect()
    }

    /// The shard `job` is in, and the job as the shard knows it.
    fn owner(&self, job: &Claimed) -> Option<(Arc<Q>, Claimed)> {
        let (k, inner) = split(&job.id)?;
        let mut job = job.clone();
        job.id = inner.to_owned();
        Some((self.get(k)?, job))
    }
}

#[async_trait]
impl<Q: JobQueue> JobQueue for ShardedQueue<Q> {
    async fn enqueue_traced(
        &self,
        queue: QueueName,
        payload: String,
        trace: Option<String>,
    ) -> Result<()> {
        let shards = self.all();
        let k = self.turn.fetch_add(1, Ordering::Relaxed) % shards.len();
        shards[k].enqueue_traced(queue, payload, trace).await
    }

    async fn claim(
        &self,
        queue: QueueName,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>> {
        let deadline = Instant::now() + wait;
        let shards = self.all();
        loop {
            let first = self.turn.fetch_add(1, Ordering::Relaxed) % shards.len();
            let order: Vec<usize> = (0..shards.len())
                .map(|i| (first + i) % shards.len())
                .collect();
            let awake = self.rests.awake(&order);
            // An even share from each shard first, then the rest from those
            // that had more; a shard short of its share leaves the slack to
            // the ones after it.
            let share = max.div_ceil(awake.len());
            let mut jobs = Vec::new();
            let mut fuller = Vec::new();
            // A shard that fails does not stop the claim: the jobs the
            // others delivered are in their pending lists under this
            // consumer, and dropped here they would wait out a whole lease
            // before anyone took them over.
            let mut failed = None;
            for &k in &awake {
                let want = share.min(max - jobs.len());
                if want == 0 {
                    break;
                }
                match shards[k].claim(queue, consumer, want, Duration::ZERO).await {
                    Ok(got) => {
                        self.rests.recovered(k);
                        if got.len() == want {
                            fuller.push(k);
                        }
                        jobs.extend(got.into_iter().map(|j| claimed_in(k, j)));
                    }
                    Err(e) => {
                        self.rests.failed(k);
                        failed.get_or_insert((k, e));
                    }
                }
            }
            for k in fuller {
                if jobs.len() >= max {
                    break;
                }
                let rest = max - jobs.len();
                match shards[k].claim(queue, consumer, rest, Duration::ZERO).await {
                    Ok(got) => jobs.extend(got.into_iter().map(|j| claimed_in(k, j))),
                    Err(e) => {
                        self.rests.failed(k);
                        failed.get_or_insert((k, e));
                    }
                }
            }
            match failed {
                Some((_, e)) if jobs.is_empty() => return Err(e),
                Some((k, e)) => {
                    tracing::warn!(
                        queue = queue.as_str(),
                        shard = k,
                        error = %e,
                        "a queue shard failed a claim; the others' jobs go on"
                    );
                    return Ok(jobs);
                }
                None if !jobs.is_empty() => return Ok(jobs),
                None => {}
            }
            // All empty: wait on one shard for a slice, not on all at once
            // (a read blocked on each would claim jobs nobody returns), then
            // look at all again.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            let k = awake[0];
            let got = match shards[k]
                .claim(queue, consumer, max, left.min(IDLE_SLICE))
                .await
            {
                Ok(got) => got,
                Err(e) => {
                    self.rests.failed(k);
                    return Err(e);
                }
            };
            if !got.is_empty() {
                return Ok(got.into_iter().map(|j| claimed_in(k, j)).collect());
            }
        }
    }

    async fn ack(&self, queue: QueueName, jobs: &[Claimed]) -> Result<()> {
        let mut outcome = Ok(());
        for (shard, jobs) in self.by_shard(jobs) {
            keep_first_error(&mut outcome, shard.ack(queue, &jobs).await);
        }
        outcome
    }

    async fn retry(
        &self,
        queue: QueueName,
        job: &Claimed,
        error: &str,
        delay: Duration,
    ) -> Result<()> {
        match self.owner(job) {
            Some((shard, job)) => shard.retry(queue, &job, error, delay).await,
            None => Ok(()),
        }
    }

    async fn bury(&self, queue: QueueName, job: &Claimed, error: &str) -> Result<()> {
        match self.owner(job) {
            Some((shard, job)) => shard.bury(queue, &job, error).await,
            None => Ok(()),
        }
    }

    async fn defer(&self, queue: QueueName, jobs: &[Claimed], delay: Duration) -> Result<()> {
        let mut outcome = Ok(());
        for (shard, jobs) in self.by_shard(jobs) {
            keep_first_error(&mut outcome, shard.defer(queue, &jobs, delay).await);
        }
        outcome
    }

    async fn renew(&self, queue: QueueName, consumer: &str, ids: &[String]) -> Result<usize> {
        let mut per_shard: Vec<(usize, Vec<String>)> = Vec::new();
        for (k, inner) in ids.iter().filter_map(|id| split(id)) {
            match per_shard.iter_mut().find(|(g, _)| *g == k) {
                Some((_, group)) => group.push(inner.to_owned()),
                None => per_shard.push((k, vec![inner.to_owned()])),
            }
        }
        let (mut renewed, mut outcome) = (0, Ok(()));
        for (k, ids) in per_shard {
            if let Some(shard) = self.get(k) {
                match shard.renew(queue, consumer, &ids).await {
                    Ok(n) => renewed += n,
                    Err(e) => keep_first_error(&mut outcome, Err(e)),
                }
            }
        }
        outcome.map(|()| renewed)
    }

    async fn retire(&self, queue: QueueName, consumer: &str) -> Result<()> {
        for shard in self.all() {
            shard.retire(queue, consumer).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl<Q: JobQueue> JobHistory for ShardedQueue<Q> {
    async fn stats(&self, queue: QueueName) -> Result<QueueStats> {
        let mut sum = QueueStats::default();
        for shard in self.all() {
            let s = shard.stats(queue).await?;
            sum.ready += s.ready;
            sum.in_flight += s.in_flight;
            sum.retrying += s.retrying;
            sum.dead += s.dead;
            sum.done += s.done;
        }
        Ok(sum)
    }

    async fn dead_jobs(&self, queue: QueueName, limit: usize) -> Result<Vec<DeadJob>> {
        let mut all = Vec::new();
        for (k, shard) in self.all().into_iter().enumerate() {
            all.extend(
                shard
                    .dead_jobs(queue, limit)
                    .await?
                    .into_iter()
                    .map(|j| dead_in(k, j)),
            );
        }
        all.sort_by_key(|j| std::cmp::Reverse(j.buried_at));
        all.truncate(limit);
        Ok(all)
    }

    async fn dead_job(&self, queue: QueueName, id: &str) -> Result<Option<DeadJob>> {
        let Some((k, inner)) = split(id) else {
            return Ok(None);
        };
        let Some(shard) = self.get(k) else {
            return Ok(None);
        };
        Ok(shard.dead_job(queue, inner).await?.map(|j| dead_in(k, j)))
    }

    async fn revive(&self, queue: QueueName, id: &str) -> Result<Option<String>> {
        let Some((k, inner)) = split(id) else {
            return Ok(None);
        };
        let Some(shard) = self.get(k) else {
            return Ok(None);
        };
        Ok(shard.revive(queue, inner).await?.map(|h| handle(k, &h)))
    }

    async fn discard(&self, queue: QueueName, id: &str) -> Result<bool> {
        match split(id).and_then(|(k, inner)| Some((self.get(k)?, inner))) {
            Some((shard, inner)) => shard.discard(queue, inner).await,
            None => Ok(false),
        }
    }

    async fn retry_now(&self, queue: QueueName, id: &str) -> Result<bool> {
        match split(id).and_then(|(k, inner)| Some((self.get(k)?, inner))) {
            Some((shard, inner)) => shard.retry_now(queue, inner).await,
            None => Ok(false),
        }
    }

    async fn cancel(&self, queue: QueueName, state: JobState, id: &str) -> Result<bool> {
        match split(id).and_then(|(k, inner)| Some((self.get(k)?, inner))) {
            Some((shard, inner)) => shard.cancel(queue, state, inner).await,
            None => Ok(false),
        }
    }

    async fn jobs(
        &self,
        queue: QueueName,
        state: JobState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        let shards = self.all();
        let (mut k, mut inner) = match cursor {
            None => (0, None),
            Some(c) => match split(c) {
                Some((k, "")) => (k, None),
                Some((k, inner)) => (k, Some(inner.to_owned())),
                None => return Ok(JobPage::default()),
            },
        };
        let mut jobs = Vec::new();
        while k < shards.len() {
            let page = shards[k]
                .jobs(queue, state, inner.as_deref(), limit - jobs.len())
                .await?;
            jobs.extend(page.jobs.into_iter().map(|j| record_in(k, j)));
            if let Some(next) = page.next {
                return Ok(JobPage {
                    jobs,
                    next: Some(handle(k, &next)),
                });
            }
            k += 1;
            inner = None;
            if jobs.len() >= limit {
                let next = (k < shards.len()).then(|| handle(k, ""));
                return Ok(JobPage { jobs, next });
            }
        }
        Ok(JobPage { jobs, next: None })
    }

    async fn job(&self, queue: QueueName, state: JobState, id: &str) -> Result<Option<JobRecord>> {
        let Some((k, inner)) = split(id) else {
            return Ok(None);
        };
        let Some(shard) = self.get(k) else {
            return Ok(None);
        };
        Ok(shard
            .job(queue, state, inner)
            .await?
            .map(|j| record_in(k, j)))
    }

    async fn trim(&self, queue: QueueName, retention: Retention) -> Result<Trimmed> {
        let mut sum = Trimmed::default();
        for shard in self.all() {
            let t = shard.trim(queue, retention).await?;
            sum.done += t.done;
            sum.dead += t.dead;
        }
        Ok(sum)
    }

    async fn ping(&self) -> Result<()> {
        for shard in self.all() {
            shard.ping().await?;
        }
        Ok(())
    }

    fn system(&self) -> &'static str {
        self.all()[0].system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_names_its_shard_and_the_handle_within_it() {
        assert_eq!(handle(3, "1700000000000-0"), "3.1700000000000-0");
        assert_eq!(split("3.1700000000000-0"), Some((3, "1700000000000-0")));
        // A retrying handle carries a colon of its own.
        assert_eq!(split("12.1700:1-0"), Some((12, "1700:1-0")));
        assert_eq!(split("1700000000000-0"), None);
        assert_eq!(split("x.1-0"), None);
    }
}
