//! Ticks every N seconds, aligned to the Unix epoch
//! (`chat_ops::runs::next_tick`).
//!
//! Alignment is what makes replicas agree: each computes the same tick
//! times from its own clock, so a tick's timestamp is a key they can race
//! on. A cron expression could only say this for N that divide a minute.
use std::pin::Pin;

use apalis_cron::{CronScheduler, Schedule, Tick, timezone::Utc};
use futures::{Stream, StreamExt};

#[derive(Clone, Debug)]
pub struct Every {
    secs: u64,
    last: u64,
}

impl Every {
    pub fn seconds(secs: u64) -> Self {
        Self {
            secs: secs.max(1),
            last: 0,
        }
    }

    /// The first multiple of the period after both `now` and the last
    /// tick given out, so a timer that wakes a hair early cannot repeat a
    /// tick.
    fn after(&self, now: u64) -> u64 {
        chat_ops::runs::next_tick(self.secs, now.max(self.last))
    }
}

impl Schedule<Utc> for Every {
    fn next_tick(&mut self, _: &Utc) -> Option<Tick<Utc>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        self.last = self.after(now);
        Some(Tick::new(self.last))
    }
}

type TickStream = Pin<Box<dyn Stream<Item = Result<Tick<Utc>, apalis_cron::Error>> + Send>>;

/// The ticks of one task, from apalis-cron.
///
/// apalis-cron computes the next tick as one fires. If its consumer is
/// still busy when that tick passes, every later poll fails with
/// `OutOfRange` for the same missed tick, for good. `Ticks` then rebuilds
/// the stream from now, so a run longer than its interval costs the ticks
/// it overlapped (another replica may run them) and nothing more.
pub struct Ticks {
    every: u64,
    stream: TickStream,
}

impl Ticks {
    pub fn every(secs: u64) -> Self {
        Self {
            every: secs,
            stream: Self::stream(secs),
        }
    }

    fn stream(secs: u64) -> TickStream {
        Box::pin(CronScheduler::new(Every::seconds(secs)).into_stream())
    }

    /// The next tick's scheduled time, in seconds since the epoch.
    pub async fn next(&mut self) -> Option<i64> {
        loop {
            match self.stream.next().await? {
                Ok(tick) => return Some(tick.get_timestamp() as i64),
                Err(e) => {
                    tracing::debug!(error = %e, "missed a tick while busy; rescheduling");
                    self.stream = Self::stream(self.every);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_epoch_multiples_strictly_ahead() {
        let mut every = Every::seconds(60);
        assert_eq!(every.after(0), 60);
        assert_eq!(every.after(59), 60);
        assert_eq!(every.after(60), 120);
        every.last = 180;
        // A clock read behind the last tick still moves forward.
        assert_eq!(every.after(100), 240);
    }

    #[test]
    fn next_tick_moves_forward() {
        let mut every = Every::seconds(1);
        let a = every.next_tick(&Utc).unwrap().get_timestamp();
        let b = every.next_tick(&Utc).unwrap().get_timestamp();
        assert!(b > a);
    }
}

#[cfg(test)]
mod ticks_tests {
    use std::time::Duration;

    use super::Ticks;

    #[tokio::test]
    async fn a_consumer_busy_past_a_tick_still_gets_the_next_ones() {
        let mut ticks = Ticks::every(1);
        let first = ticks.next().await.unwrap();
        // Busy through the next tick, as a long run would be.
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        let next = tokio::time::timeout(Duration::from_secs(3), ticks.next())
            .await
            .expect("ticks resumed")
            .unwrap();
        assert!(
            next >= first + 3,
            "a tick from after the busy spell: {first} then {next}"
        );
    }
}
