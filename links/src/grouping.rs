//! Grouping calls into round trips: many callers each ask for one thing,
//! and one task answers them a group at a time, so a group of requests
//! costs one round trip to a backend.
//!
//! A [`Group`] takes items from its callers, gathers up to `max` of them
//! (waiting up to `linger` after the first, or taking only what is
//! already there when `linger` is zero), and hands the group to its
//! [`GroupWork`], with at most `in_flight` groups at work at once: a group
//! gathers while others are in a backend. Each caller then gets the answer
//! to its own item. The work decides what a failed group means; most run
//! it through [`whole_then_alone`], which falls back to one item at a time
//! so one bad item fails alone.
use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    time::{Instant, timeout_at},
};

/// How a [`Group`] gathers its items.
#[derive(Clone, Copy, Debug)]
pub struct Grouping {
    /// Most items in one group.
    pub max: usize,
    /// How long a group waits for more items after its first; zero takes
    /// only those already waiting, so an idle caller waits for nobody.
    pub linger: Duration,
    /// Groups at work at once.
    pub in_flight: usize,
}

/// The work done on one group.
#[async_trait]
pub trait GroupWork<T: Send + 'static>: Send + Sync + 'static {
    /// One caller's answer.
    type Answer: Send + 'static;

    /// Answers every item of `group`, in order. [`whole_then_alone`] is the
    /// usual shape: the group at once, then item by item after a failure
    /// that may be one item's.
    async fn answer(&self, group: Vec<T>) -> Vec<Self::Answer>;
}

/// Work done on a group at once, all or nothing: the usual shape of a
/// [`GroupWork`], which then answers through [`whole_then_alone`].
#[async_trait]
pub trait WholeGroup<T: Send + Sync + 'static>: Send + Sync + 'static {
    type Answer: Send + 'static;
    type Error: Send + Sync;

    /// One answer per item of `group`, in order, or the group's failure.
    async fn run(&self, group: &[T]) -> Result<Vec<Self::Answer>, Self::Error>;

    /// Whether a failed group may owe its failure to one of its items, so
    /// that running them one by one lets the others through.
    fn alone(&self, _error: &Self::Error) -> bool {
        false
    }

    /// The answer of an item whose group, or whose own run, failed.
    fn failed(&self, error: &Self::Error) -> Self::Answer;
}

/// Runs `group` whole; after a failure that [`WholeGroup::alone`] says may
/// be one item's, runs each item by itself, so one bad item fails alone.
pub async fn whole_then_alone<T, W>(work: &W, group: Vec<T>) -> Vec<W::Answer>
where
    T: Send + Sync + 'static,
    W: WholeGroup<T>,
{
    let error = match work.run(&group).await {
        Ok(answers) => return answers,
        Err(e) => e,
    };
    if group.len() == 1 || !work.alone(&error) {
        return group.iter().map(|_| work.failed(&error)).collect();
    }
    let mut answers = Vec::with_capacity(group.len());
    for item in group {
        answers.push(match work.run(std::slice::from_ref(&item)).await {
            Ok(mut one) if one.len() == 1 => one.remove(0),
            Ok(_) => work.failed(&error),
            Err(e) => work.failed(&e),
        });
    }
    answers
}

/// The task that answers a group's items has stopped: the process is
/// shutting down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

type Ask<T, A> = (T, Option<oneshot::Sender<A>>);

/// Hands items to a task that answers them a group at a time. Clones
/// share the task.
pub struct Group<T, A> {
    tx: mpsc::Sender<Ask<T, A>>,
}

impl<T, A> Clone for Group<T, A> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, A: Send + 'static> Group<T, A> {
    /// Starts the task that runs `work`; it stops once every clone of the
    /// returned handle is gone, after the groups at work finish.
    pub fn spawn<W: GroupWork<T, Answer = A>>(work: Arc<W>, grouping: Grouping) -> Self {
        let grouping = Grouping {
            max: grouping.max.max(1),
            in_flight: grouping.in_flight.max(1),
            ..grouping
        };
        let (tx, rx) = mpsc::channel(grouping.max * grouping.in_flight * 4);
        tokio::spawn(gather(rx, work, grouping));
        Self { tx }
    }

    /// Hands `item` over and waits for its answer.
    pub async fn ask(&self, item: T) -> Result<A, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((item, Some(reply)))
            .await
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }

    /// Hands `item` over without waiting for its answer.
    pub async fn tell(&self, item: T) -> Result<(), Stopped> {
        self.tx.send((item, None)).await.map_err(|_| Stopped)
    }
}

async fn gather<T, W>(mut rx: mpsc::Receiver<Ask<T, W::Answer>>, work: Arc<W>, grouping: Grouping)
where
    T: Send + 'static,
    W: GroupWork<T>,
{
    let slots = Arc::new(Semaphore::new(grouping.in_flight));
    loop {
        // Waiting for a free slot first lets the next group grow meanwhile.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut group = Vec::with_capacity(grouping.max);
        if grouping.linger.is_zero() {
            if rx.recv_many(&mut group, grouping.max).await == 0 {
                break;
            }
        } else {
            let Some(first) = rx.recv().await else {
                break;
            };
            group.push(first);
            let deadline = Instant::now() + grouping.linger;
            while group.len() < grouping.max {
                match timeout_at(deadline, rx.recv()).await {
                    Ok(Some(item)) => group.push(item),
                    _ => break,
                }
            }
        }
        let work = work.clone();
        tokio::spawn(async move {
            let (items, replies): (Vec<T>, Vec<_>) = group.into_iter().unzip();
            let answers = work.answer(items).await;
            for (reply, answer) in replies.into_iter().zip(answers) {
                if let Some(reply) = reply {
                    let _ = reply.send(answer);
                }
            }
            drop(slot);
        });
    }
    // Every handle is gone: let the groups at work finish.
    let _ = slots.acquire_many(grouping.in_flight as u32).await;
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering::SeqCst},
    };

    use super::*;

    /// Doubles numbers; a group holding 13 fails, and so does 13 alone.
    /// Records every group it was given, and how many ran at once.
    #[derive(Default)]
    struct Doubler {
        groups: Mutex<Vec<Vec<u32>>>,
        now: AtomicUsize,
        peak: AtomicUsize,
        pause: Duration,
    }

    #[async_trait]
    impl GroupWork<u32> for Doubler {
        type Answer = Result<u32, String>;

        async fn answer(&self, group: Vec<u32>) -> Vec<Self::Answer> {
            whole_then_alone(self, group).await
        }
    }

    #[async_trait]
    impl WholeGroup<u32> for Doubler {
        type Answer = Result<u32, String>;
        type Error = String;

        fn alone(&self, _: &String) -> bool {
            true
        }

        fn failed(&self, e: &String) -> Self::Answer {
            Err(e.clone())
        }

        async fn run(&self, group: &[u32]) -> Result<Vec<Self::Answer>, String> {
            let now = self.now.fetch_add(1, SeqCst) + 1;
            self.peak.fetch_max(now, SeqCst);
            tokio::time::sleep(self.pause).await;
            self.now.fetch_sub(1, SeqCst);
            self.groups.lock().unwrap().push(group.to_vec());
            if group.contains(&13) {
                return Err("unlucky".into());
            }
            Ok(group.iter().map(|n| Ok(n * 2)).collect())
        }
    }

    async fn ask_all(group: &Group<u32, Result<u32, String>>, n: u32) -> Vec<Result<u32, String>> {
        let asks = (0..n).map(|i| {
            let group = group.clone();
            tokio::spawn(async move { group.ask(i).await.unwrap() })
        });
        futures_join(asks).await
    }

    async fn futures_join<F: std::future::Future<Output = Result<R, tokio::task::JoinError>>, R>(
        tasks: impl Iterator<Item = F>,
    ) -> Vec<R> {
        let mut out = Vec::new();
        for t in tasks.collect::<Vec<_>>() {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn every_caller_gets_its_own_answer_and_groups_stay_under_the_cap() {
        let work = Arc::new(Doubler::default());
        let group = Group::spawn(
            work.clone(),
            Grouping {
                max: 8,
                linger: Duration::from_millis(5),
                in_flight: 1,
            },
        );
        let answers = ask_all(&group, 40).await;
        assert_eq!(answers[7], Ok(14));
        assert_eq!(answers[13], Err("unlucky".into()), "13 fails alone");
        let others_ok = answers
            .iter()
            .enumerate()
            .all(|(i, a)| i == 13 || a == &Ok(i as u32 * 2));
        assert!(others_ok, "{answers:?}");
        let groups = work.groups.lock().unwrap();
        assert!(groups.iter().all(|g| g.len() <= 8));
        assert!(groups.iter().any(|g| g.len() > 1), "callers were grouped");
    }

    #[tokio::test]
    async fn groups_overlap_up_to_the_in_flight_limit() {
        for in_flight in [1, 3] {
            let work = Arc::new(Doubler {
                pause: Duration::from_millis(20),
                ..Default::default()
            });
            let group = Group::spawn(
                work.clone(),
                Grouping {
                    max: 2,
                    linger: Duration::ZERO,
                    in_flight,
                },
            );
            ask_all(&group, 30).await;
            assert_eq!(work.peak.load(SeqCst), in_flight);
        }
    }

    #[tokio::test]
    async fn a_told_item_is_answered_before_a_later_ask_on_one_slot() {
        let work = Arc::new(Doubler::default());
        let group = Group::spawn(
            work.clone(),
            Grouping {
                max: 100,
                linger: Duration::ZERO,
                in_flight: 1,
            },
        );
        group.tell(1).await.unwrap();
        assert_eq!(group.ask(2).await, Ok(Ok(4)));
        let seen: Vec<u32> = work.groups.lock().unwrap().concat();
        assert_eq!(seen, [1, 2]);
    }
}
