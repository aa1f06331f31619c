//! Ticks every N seconds, aligned to the Unix epoch.
//!
//! Alignment is what makes replicas agree: each computes the same tick
//! times from its own clock, so a tick's timestamp is a key they can race
//! on. A cron expression could only say this for N that divide a minute.
use apalis_cron::{Schedule, Tick, timezone::Utc};

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
        let from = now.max(self.last);
        (from / self.secs + 1) * self.secs
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
