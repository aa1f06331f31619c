//! When each fault happens, relative to the start of the load.
//!
//! One cycle places every fault at a multiple of `tick`, overlapping them
//! so that the two-minute search outage and the one-minute database
//! freeze share their time with the short faults. The load runs `cycles`
//! of them, and every other wait of the scenario is a field here too, so a
//! preset is a handful of numbers.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Timeline {
    /// The unit the short faults are spaced by within a cycle.
    pub tick: Duration,
    /// How long the search emulator stays down.
    pub search_outage: Duration,
    /// How long MariaDB stays frozen (SIGSTOP to SIGCONT).
    pub db_freeze: Duration,
    /// A worker is SIGKILLed and restarted this often, the two in turn,
    /// from the first tick until the load stops.
    pub worker_kill_every: Duration,
    /// Cycles the load runs (unless the target number of writes comes
    /// first).
    pub cycles: u32,
    /// After the load, how long a client may still retry its last write
    /// before its outcome is given up as unknown.
    pub drain: Duration,
    /// How long to wait for every write a client was told about to be
    /// listed.
    pub settle: Duration,
    /// How long to wait for the search index to hold every persisted
    /// message.
    pub search_settle: Duration,
    /// A wait ends early when nothing moved for this long and the queue
    /// it waits on is idle: what is missing then will not come.
    pub stall: Duration,
}

/// The rate a long run is assumed to sustain at worst, to bound how many
/// cycles it may take to reach its target.
const LONG_MIN_WRITES_PER_SEC: f64 = 250.0;

impl Timeline {
    /// One cycle of 150 s, for CI: search down from 10 s to 130 s, Redis
    /// killed at 15 s and 25 s, its clients cut at 30 s, MariaDB frozen
    /// from 40 s to 100 s and killed at 110 s.
    pub fn ci() -> Timeline {
        Timeline {
            tick: Duration::from_secs(5),
            search_outage: Duration::from_secs(120),
            db_freeze: Duration::from_secs(60),
            worker_kill_every: Duration::from_secs(7),
            cycles: 1,
            drain: Duration::from_secs(30),
            settle: Duration::from_secs(120),
            search_settle: Duration::from_secs(120),
            stall: Duration::from_secs(20),
        }
    }

    /// Cycles of 200 s, enough of them for `messages` at a pessimistic
    /// rate; the target normally ends the load first. The waits after the
    /// load grow with the volume left to persist and index.
    pub fn long(messages: usize) -> Timeline {
        let mut t = Timeline {
            tick: Duration::from_secs(10),
            search_outage: Duration::from_secs(120),
            db_freeze: Duration::from_secs(60),
            worker_kill_every: Duration::from_secs(10),
            cycles: 1,
            drain: Duration::from_secs(60),
            settle: Duration::from_secs(600),
            search_settle: Duration::from_secs(1800).max(secs(messages as f64 / 500.0)),
            stall: Duration::from_secs(60),
        };
        let needed = messages as f64 / LONG_MIN_WRITES_PER_SEC;
        t.cycles = (needed / t.cycle().as_secs_f64()).ceil().max(1.0) as u32;
        t
    }

    /// The length of one cycle: the later of the search outage's and the
    /// database kill's ends, plus a margin for the last probe.
    pub fn cycle(&self) -> Duration {
        let search_end = self.tick * 2 + self.search_outage;
        let db_kill = self.db_kill_at();
        search_end.max(db_kill) + self.tick * 4
    }

    /// The longest the load runs.
    pub fn load(&self) -> Duration {
        self.cycle() * self.cycles
    }

    fn db_kill_at(&self) -> Duration {
        self.tick * 10 + self.db_freeze
    }

    /// Every fault of every cycle, in start order.
    pub(crate) fn plan(&self) -> Vec<Planned> {
        let mut out = Vec::new();
        for c in 0..self.cycles {
            let base = self.cycle() * c;
            let suffix = if self.cycles > 1 {
                format!(" [cycle {}]", c + 1)
            } else {
                String::new()
            };
            let t = self.tick;
            let mut add = |at: Duration, kind, lasts, name: &str| {
                out.push(Planned {
                    at: base + at,
                    kind,
                    lasts,
                    name: format!("{name}{suffix}"),
                })
            };
            add(
                t * 2,
                FaultKind::SearchDown,
                self.search_outage,
                &format!("search down {}s", self.search_outage.as_secs()),
            );
            add(
                t * 3,
                FaultKind::RedisKill,
                Duration::ZERO,
                "redis SIGKILL #1",
            );
            add(
                t * 5,
                FaultKind::RedisKill,
                Duration::ZERO,
                "redis SIGKILL #2",
            );
            add(
                t * 6,
                FaultKind::RedisClientKill,
                Duration::ZERO,
                "redis CLIENT KILL",
            );
            add(
                t * 8,
                FaultKind::DbFreeze,
                self.db_freeze,
                &format!("mariadb SIGSTOP {}s", self.db_freeze.as_secs()),
            );
            add(
                self.db_kill_at(),
                FaultKind::DbKill,
                Duration::ZERO,
                "mariadb SIGKILL",
            );
        }
        out.sort_by_key(|p| p.at);
        out
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// SIGKILL and restart from the AOF.
    RedisKill,
    /// Every client connection closed by the server.
    RedisClientKill,
    /// SIGSTOP for `lasts`, then SIGCONT.
    DbFreeze,
    /// SIGKILL and restart on the same datadir.
    DbKill,
    /// Stopped for `lasts`, then started again empty.
    SearchDown,
}

#[derive(Clone, Debug)]
pub(crate) struct Planned {
    pub at: Duration,
    pub kind: FaultKind,
    /// Zero for a fault that is over once the server is back.
    pub lasts: Duration,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_fits_in_about_three_minutes() {
        let t = Timeline::ci();
        assert_eq!(t.load(), Duration::from_secs(150));
        let plan = t.plan();
        assert_eq!(plan.len(), 6);
        let search = plan
            .iter()
            .find(|p| p.kind == FaultKind::SearchDown)
            .unwrap();
        assert_eq!(
            (search.at, search.at + search.lasts),
            (Duration::from_secs(10), Duration::from_secs(130))
        );
        let freeze = plan.iter().find(|p| p.kind == FaultKind::DbFreeze).unwrap();
        assert_eq!(freeze.at + freeze.lasts, Duration::from_secs(100));
        assert!(plan.iter().all(|p| p.at + p.lasts < t.load()));
    }

    #[test]
    fn long_repeats_cycles_in_order() {
        let t = Timeline::long(1_000_000);
        assert!(t.cycles > 1);
        let plan = t.plan();
        assert_eq!(plan.len(), 6 * t.cycles as usize);
        assert!(plan.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(plan.iter().all(|p| p.at + p.lasts < t.load()));
        assert!(
            plan.last()
                .unwrap()
                .name
                .ends_with(&format!("[cycle {}]", t.cycles))
        );
    }
}
