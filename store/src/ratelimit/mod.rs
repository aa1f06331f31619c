//! Rate limits shared by every API process: GCRA (the generic cell rate
//! algorithm), one stored time per key. A key allows `limit` requests per
//! `period`, in a burst or spread out; each request moves the key's
//! theoretical arrival time (TAT) on by `period / limit`, and a request
//! that would move it more than `period` past now is refused.
//!
//! - [`RedisRateLimiter`]: one Lua script checks every key of a request
//!   atomically, in one round trip, against Redis's clock, so all API
//!   processes share the limits;
//! - [`MemoryRateLimiter`]: the same arithmetic in this process, for the
//!   embedded profile, which runs one API process.
//!
//! A request is checked against several keys at once (its application
//! token and its client address); it is admitted only if every key
//! admits it, and a refused request consumes nothing.
//!
//! [`folded`]: a write's check made inside the intake's accept script, in
//! the round trip that accepts the write; and a read's, inside the one
//! that reads its pending entry.
use std::time::Duration;

use async_trait::async_trait;

use chat_links::error::Result;

pub mod folded;
mod memory;
mod redis;

pub use memory::MemoryRateLimiter;
pub use redis::RedisRateLimiter;
pub(crate) use redis::{GCRA_LUA, key as redis_key};

/// One limit a request counts against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// What is limited, e.g. `w:t:<token digest>`; unique per kind and subject.
    pub key: String,
    /// Requests allowed per period.
    pub limit: u32,
    pub period: Duration,
}

impl Limit {
    /// The time one request uses up, in µs (at least 1).
    pub(crate) fn cost_us(&self) -> i64 {
        (self.period.as_micros() as i64 / i64::from(self.limit.max(1))).max(1)
    }

    pub(crate) fn period_us(&self) -> i64 {
        self.period.as_micros() as i64
    }
}

/// The answer for one request, described by its most restrictive limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The most restrictive limit's size.
    pub limit: u32,
    /// Requests that limit still allows right now.
    pub remaining: u32,
    /// Until that limit is wholly available again.
    pub reset: Duration,
    /// When refused: until the request would be admitted.
    pub retry_after: Duration,
}

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Checks and, when every limit admits it, counts one request.
    async fn check(&self, limits: &[Limit]) -> Result<Verdict>;
}

/// One key's state after a check at `now` (µs): the GCRA step both
/// backends compute (the Redis script in Lua, the same way).
struct Step {
    /// The key's TAT if the request is admitted.
    next_tat: i64,
    /// How long the request would have to wait; 0 when admitted.
    wait: i64,
}

fn step(limit: &Limit, stored_tat: i64, now: i64) -> Step {
    let tat = stored_tat.max(now);
    let next_tat = tat + limit.cost_us();
    Step {
        next_tat,
        wait: (next_tat - limit.period_us() - now).max(0),
    }
}

/// Builds the verdict from each key's TAT after the request (admitted) or
/// as it stands (refused), at `now`.
pub(crate) fn verdict(limits: &[Limit], tats: &[i64], now: i64, wait: i64) -> Verdict {
    let mut worst: Option<(u32, u32, i64)> = None;
    for (limit, &tat) in limits.iter().zip(tats) {
        let used = (tat - now).max(0);
        let remaining = ((limit.period_us() - used).max(0) / limit.cost_us()) as u32;
        let remaining = remaining.min(limit.limit);
        if worst.is_none_or(|(_, r, _)| remaining < r) {
            worst = Some((limit.limit, remaining, used));
        }
    }
    let (limit, remaining, reset) = worst.unwrap_or((0, 0, 0));
    Verdict {
        allowed: wait == 0,
        limit,
        remaining,
        reset: Duration::from_micros(reset as u64),
        retry_after: Duration::from_micros(wait as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_the_limit_passes_then_one_per_interval() {
        let limiter = MemoryRateLimiter::default();
        let l = vec![Limit {
            key: "k".into(),
            limit: 5,
            period: Duration::from_millis(500),
        }];
        for remaining in (0..5).rev() {
            let v = limiter.check(&l).await.unwrap();
            assert!(v.allowed);
            assert_eq!((v.limit, v.remaining), (5, remaining));
        }
        let refused = limiter.check(&l).await.unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert!(
            refused.retry_after > Duration::ZERO
                && refused.retry_after <= Duration::from_millis(100)
        );
        tokio::time::sleep(refused.retry_after + Duration::from_millis(5)).await;
        assert!(
            limiter.check(&l).await.unwrap().allowed,
            "one more after an interval"
        );
    }

    #[tokio::test]
    async fn a_request_refused_by_one_key_costs_the_others_nothing() {
        let limiter = MemoryRateLimiter::default();
        let tight = Limit {
            key: "tight".into(),
            limit: 1,
            period: Duration::from_secs(60),
        };
        let loose = Limit {
            key: "loose".into(),
            limit: 2,
            period: Duration::from_secs(60),
        };
        assert!(
            limiter
                .check(&[tight.clone(), loose.clone()])
                .await
                .unwrap()
                .allowed
        );
        let refused = limiter.check(&[tight, loose.clone()]).await.unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.limit, 1, "the verdict names the limit that refused");
        let v = limiter.check(&[loose]).await.unwrap();
        assert!(v.allowed);
        assert_eq!(v.remaining, 0, "only the admitted request counted");
    }
}
