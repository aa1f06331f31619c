//! The rate limiter of the embedded profile: TATs in a map in this
//! process.
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;

use super::{Limit, RateLimiter, Verdict, step, verdict};
use chat_links::error::Result;

/// Keys kept before the idle ones (whose TAT has passed) are dropped.
const PRUNE_ABOVE: usize = 100_000;

#[derive(Default)]
pub struct MemoryRateLimiter {
    tats: Mutex<HashMap<String, i64>>,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, limits: &[Limit]) -> Result<Verdict> {
        let now = now_us();
        let mut tats = self.tats.lock().unwrap();
        if tats.len() > PRUNE_ABOVE {
            // A key whose TAT has passed is fully replenished: the same as
            // absent.
            tats.retain(|_, tat| *tat > now);
        }
        let stored: Vec<i64> = limits
            .iter()
            .map(|l| tats.get(&l.key).copied().unwrap_or(0))
            .collect();
        let steps: Vec<_> = limits
            .iter()
            .zip(&stored)
            .map(|(l, &tat)| step(l, tat, now))
            .collect();
        let wait = steps.iter().map(|s| s.wait).max().unwrap_or(0);
        if wait > 0 {
            return Ok(verdict(limits, &stored, now, wait));
        }
        let next: Vec<i64> = steps.iter().map(|s| s.next_tat).collect();
        for (l, &tat) in limits.iter().zip(&next) {
            tats.insert(l.key.clone(), tat);
        }
        Ok(verdict(limits, &next, now, 0))
    }
}
