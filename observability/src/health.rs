//! What this process knows of the backends its work depends on: whether
//! each answers, and since when and why not. Workers report here when they
//! pause for a backend and when they resume; `/health/ready` and `/metrics`
//! read it. Backend names are plain strings chosen by the caller (a
//! handful: `database`, `search`, `queue`).
use std::{
    collections::BTreeMap,
    sync::{Mutex, OnceLock},
};

use crate::metrics::metrics;

/// A backend this process is waiting for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outage {
    pub backend: &'static str,
    /// When it was found down, in ms since the epoch.
    pub since_ms: i64,
    pub error: String,
}

fn outages() -> &'static Mutex<BTreeMap<&'static str, Outage>> {
    static OUTAGES: OnceLock<Mutex<BTreeMap<&'static str, Outage>>> = OnceLock::new();
    OUTAGES.get_or_init(Default::default)
}

/// Records that `backend` does not answer; the first report of an outage
/// keeps its start time.
pub fn down(backend: &'static str, since_ms: i64, error: &str) {
    let mut all = outages().lock().unwrap();
    let entry = all.entry(backend).or_insert_with(|| Outage {
        backend,
        since_ms,
        error: String::new(),
    });
    entry.error = error.to_owned();
    metrics().backend_up(backend, false);
}

/// Records that `backend` answers again.
pub fn up(backend: &'static str) {
    outages().lock().unwrap().remove(backend);
    metrics().backend_up(backend, true);
}

/// Every backend this process is waiting for, by name.
pub fn current() -> Vec<Outage> {
    outages().lock().unwrap().values().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_keeps_its_start_until_the_backend_is_up() {
        down("test-backend", 10, "refused");
        down("test-backend", 20, "timed out");
        let now: Vec<_> = current()
            .into_iter()
            .filter(|o| o.backend == "test-backend")
            .collect();
        assert_eq!(now.len(), 1);
        assert_eq!((now[0].since_ms, now[0].error.as_str()), (10, "timed out"));
        up("test-backend");
        assert!(current().iter().all(|o| o.backend != "test-backend"));
    }
}
