//! Latency percentiles and throughput of one measured run.
use std::time::Duration;

/// Latencies of one or more runs, and the wall time they took together.
#[derive(Debug, Default)]
pub struct Samples {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Samples {
    /// Adds another run, as if the two had run back to back.
    pub fn add(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.elapsed += other.elapsed;
    }

    pub fn summary(self) -> Summary {
        Summary::of(self.latencies, self.elapsed)
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub count: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// `elapsed` is the wall time the samples were taken over; zero means
    /// the rate is meaningless (lag samples) and is reported as 0.
    pub fn of(mut samples: Vec<Duration>, elapsed: Duration) -> Self {
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |p: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest sample at or above the p-quantile.
            let rank = (p * samples.len() as f64).ceil() as usize;
            ms(samples[rank.clamp(1, samples.len()) - 1])
        };
        Self {
            count: samples.len(),
            per_sec: if elapsed.is_zero() {
                0.0
            } else {
                samples.len() as f64 / elapsed.as_secs_f64()
            },
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: samples.last().map_or(0.0, |d| ms(*d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples = (1..=1000).map(Duration::from_millis).collect();
        let s = Summary::of(samples, Duration::from_secs(2));
        assert_eq!(s.count, 1000);
        assert_eq!(s.per_sec, 500.0);
        assert_eq!(s.p50_ms, 500.0);
        assert_eq!(s.p99_ms, 990.0);
        assert_eq!(s.p999_ms, 999.0);
        assert_eq!(s.max_ms, 1000.0);
    }
}
