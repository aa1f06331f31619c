//! Keeping the jobs a worker holds from being taken over while it works.
//!
//! A claim is a lease: a job unsettled for `CLAIM_IDLE_MS` is taken over by
//! another worker, as if its holder had died, and the takeover counts as
//! an attempt. A live worker can hold a job that long for good reasons: a
//! slow batch, or a backend outage it is waiting out. So every worker
//! renews the leases of the jobs it holds, a few times per lease; only a
//! worker that stopped renewing (it died, or froze) loses its jobs.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chat_queue::{Claimed, JobQueue, QueueName};

/// The jobs this process's workers of one queue hold: claimed and not yet
/// settled, by id, with the consumer that claimed each.
#[derive(Debug, Default)]
pub struct Held {
    jobs: Mutex<HashMap<String, String>>,
}

impl Held {
    pub fn hold(&self, jobs: &[Claimed]) {
        let mut held = self.jobs.lock().unwrap();
        for job in jobs {
            held.insert(job.id.clone(), job.worker.clone());
        }
    }

    /// The job is settled (acked, retried, buried or handed back).
    pub fn release(&self, id: &str) {
        self.jobs.lock().unwrap().remove(id);
    }

    /// Every job of `consumer` was handed back at once.
    pub fn release_consumer(&self, consumer: &str) {
        self.jobs.lock().unwrap().retain(|_, c| c != consumer);
    }

    pub fn len(&self) -> usize {
        self.jobs.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn by_consumer(&self) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for (id, consumer) in self.jobs.lock().unwrap().iter() {
            out.entry(consumer.clone()).or_default().push(id.clone());
        }
        out
    }
}

/// Renews the leases of every job in `held`, three times per `lease`, until
/// the returned task is aborted.
pub fn keep_renewed(
    queue: Arc<dyn JobQueue>,
    name: QueueName,
    held: Arc<Held>,
    lease: Duration,
) -> tokio::task::JoinHandle<()> {
    let every = (lease / 3).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for (consumer, ids) in held.by_consumer() {
                if let Err(e) = queue.renew(name, &consumer, &ids).await {
                    tracing::warn!(queue = name.as_str(), %consumer, jobs = ids.len(), error = %e, "could not renew held jobs");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(id: &str, worker: &str) -> Claimed {
        Claimed {
            id: id.into(),
            payload: "{}".into(),
            attempt: 1,
            failures: Vec::new(),
            trace: None,
            ready_at: 0,
            claimed_at: 0,
            enqueued_at: 0,
            worker: worker.into(),
        }
    }

    #[test]
    fn held_jobs_are_grouped_by_consumer_until_released() {
        let held = Held::default();
        held.hold(&[claimed("1", "a"), claimed("2", "a"), claimed("3", "b")]);
        held.release("2");
        let mut groups = held.by_consumer();
        for ids in groups.values_mut() {
            ids.sort();
        }
        assert_eq!(groups["a"], vec!["1".to_string()]);
        assert_eq!(groups["b"], vec!["3".to_string()]);
        held.release_consumer("b");
        assert_eq!(held.len(), 1);
    }
}
