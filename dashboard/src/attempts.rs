//! Failed attempts at the admin token, counted per client address: at
//! the login form, through the `?token=` link, and as a bearer credential.
//!
//! An address that fails `limit` times within [`WINDOW`] is refused (429)
//! until the window ends, whatever it presents, so that guessing the
//! token costs a window per `limit` guesses. Every failure is logged with
//! the address. The count lives in this process: with several API
//! processes, an address gets `limit` guesses from each.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{extract::ConnectInfo, http::HeaderMap};

/// How long failures are remembered, and an address refused once it has
/// used up its attempts.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at once; past it, the ones whose window ended are
/// forgotten, then the oldest.
const CAPACITY: usize = 10_000;

pub(crate) struct FailedAttempts {
    limit: u32,
    by_address: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

impl FailedAttempts {
    /// `limit` failures per address per [`WINDOW`]; 0 turns the limit off.
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            limit,
            by_address: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(wait)` while `address` has used up its attempts.
    pub(crate) fn refused(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        let by_address = self.by_address.lock().unwrap();
        let f = by_address.get(&address)?;
        let ends = f.since + WINDOW;
        (f.count >= self.limit && now < ends).then(|| ends - now)
    }

    /// Counts a wrong token from `address`, and logs it.
    pub(crate) fn failed(&self, address: IpAddr, how: &'static str, now: Instant) {
        let count = {
            let mut by_address = self.by_address.lock().unwrap();
            if by_address.len() >= CAPACITY && !by_address.contains_key(&address) {
                by_address.retain(|_, f| now < f.since + WINDOW);
                if by_address.len() >= CAPACITY
                    && let Some(oldest) = by_address
                        .iter()
                        .min_by_key(|(_, f)| f.since)
                        .map(|(a, _)| *a)
                {
                    by_address.remove(&oldest);
                }
            }
            let f = by_address.entry(address).or_insert(Failures {
                count: 0,
                since: now,
            });
            if now >= f.since + WINDOW {
                *f = Failures {
                    count: 0,
                    since: now,
                };
            }
            f.count += 1;
            f.count
        };
        tracing::warn!(
            client = %address,
            how,
            failures = count,
            limit = self.limit,
            "dashboard: wrong admin token"
        );
    }
}

/// The address a request came from: the first `X-Forwarded-For` entry
/// when the proxy in front is trusted to set it, else the peer's.
pub(crate) fn client_address(
    headers: &HeaderMap,
    peer: Option<&ConnectInfo<SocketAddr>>,
    trust_forwarded_for: bool,
) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| headers.get("x-forwarded-for")?.to_str().ok())
        .flatten()
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok());
    forwarded
        .or(peer.map(|c| c.0.ip()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_ends() {
        let attempts = FailedAttempts::new(3);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        for _ in 0..2 {
            attempts.failed(a, "form", t0);
        }
        assert_eq!(attempts.refused(a, t0), None, "two of three used");
        attempts.failed(a, "bearer", t0);
        assert_eq!(attempts.refused(a, t0), Some(WINDOW));
        assert_eq!(attempts.refused(b, t0), None, "another address");
        let later = t0 + WINDOW;
        assert_eq!(attempts.refused(a, later), None, "the window ended");
        attempts.failed(a, "form", later);
        assert_eq!(attempts.refused(a, later), None, "a fresh window");
        assert_eq!(FailedAttempts::new(0).refused(a, t0), None);
    }

    #[test]
    fn the_forwarded_address_counts_only_behind_a_trusted_proxy() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9, 10.0.0.1".parse().unwrap());
        let peer = ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9)));
        assert_eq!(
            client_address(&headers, Some(&peer), true),
            IpAddr::from([203, 0, 113, 9])
        );
        assert_eq!(
            client_address(&headers, Some(&peer), false),
            IpAddr::from([127, 0, 0, 1])
        );
    }
}
