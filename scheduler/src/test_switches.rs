//! Built only for the end-to-end tests (the `test-switches` feature, which
//! the `chat` package turns on for its tests alone): `SCHEDULER_HOLD_MS`
//! makes each run this process wins sit idle that long before it starts,
//! so a test can kill the scheduler mid-run.
use std::{sync::OnceLock, time::Duration};

pub(crate) fn hold() -> Duration {
    static HOLD: OnceLock<Duration> = OnceLock::new();
    *HOLD.get_or_init(|| {
        let ms = std::env::var("SCHEDULER_HOLD_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Duration::from_millis(ms)
    })
}
