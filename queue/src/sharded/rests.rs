//! Which shards sit out claims for now: a shard whose claim failed (its
//! master down, a failover under way) is left alone for a pause that
//! doubles while it keeps failing, so the claims of the others are not
//! held up by it on every call; the first claim it answers ends the rest.
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// The first rest, and the longest.
const FIRST_REST: Duration = Duration::from_millis(250);
const LONGEST_REST: Duration = Duration::from_secs(4);

#[derive(Default)]
pub(super) struct Rests {
    /// Per resting shard: until when, and how long the next rest lasts.
    resting: Mutex<HashMap<usize, (Instant, Duration)>>,
}

impl Rests {
    /// The shards of `order` not resting, in that order; all of them when
    /// every one rests, so that a claim still asks and an outage of them
    /// all reaches the caller.
    pub(super) fn awake(&self, order: &[usize]) -> Vec<usize> {
        let resting = self.resting.lock().unwrap();
        let now = Instant::now();
        let awake: Vec<usize> = (order.iter().copied())
            .filter(|k| resting.get(k).is_none_or(|(until, _)| *until <= now))
            .collect();
        if awake.is_empty() {
            order.to_vec()
        } else {
            awake
        }
    }

    pub(super) fn failed(&self, k: usize) {
        let mut resting = self.resting.lock().unwrap();
        let now = Instant::now();
        let rest = resting.get(&k).map_or(FIRST_REST, |(_, next)| *next);
        resting.insert(k, (now + rest, (rest * 2).min(LONGEST_REST)));
    }

    pub(super) fn recovered(&self, k: usize) {
        let mut resting = self.resting.lock().unwrap();
        if !resting.is_empty() {
            resting.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_shard_rests_longer_each_time_until_it_answers() {
        let rests = Rests::default();
        assert_eq!(rests.awake(&[2, 0, 1]), vec![2, 0, 1]);
        rests.failed(0);
        assert_eq!(rests.awake(&[2, 0, 1]), vec![2, 1]);
        let until = |k| rests.resting.lock().unwrap()[&k];
        assert_eq!(until(0).1, FIRST_REST * 2);
        rests.failed(0);
        rests.failed(0);
        rests.failed(0);
        rests.failed(0);
        assert_eq!(until(0).1, LONGEST_REST);
        rests.recovered(0);
        assert_eq!(rests.awake(&[2, 0, 1]), vec![2, 0, 1]);
    }

    #[test]
    fn with_every_shard_resting_a_claim_asks_them_all() {
        let rests = Rests::default();
        rests.failed(0);
        rests.failed(1);
        assert_eq!(rests.awake(&[1, 0]), vec![1, 0]);
    }
}
