//! A rate-limit check made inside another round trip. The API hands a
//! write's limits to [`within`]; when the intake accepts the write, its
//! accept script checks and counts them in the same Redis call, instead of
//! the limiter spending a call of its own.
//!
//! The limits ride in a task-local for the length of the handler, so the
//! `Intake` methods, and every caller of them, need not carry them. Only
//! an intake that [`folds`](crate::intake::Intake::folds_rate_limits)
//! reads them; the API folds only then.
use std::{future::Future, sync::Mutex};

use super::{Limit, Verdict};

tokio::task_local! {
    static FOLDED: Folded;
}

struct Folded {
    limits: Vec<Limit>,
    verdict: Mutex<Option<Verdict>>,
}

/// Runs `work` with `limits` for the intake to check, and returns what it
/// returned with the verdict of the accept it made; `None` when it made no
/// accept (it failed before one, or had nothing to write), so the limits
/// are unchecked and uncounted.
pub async fn within<F: Future>(limits: Vec<Limit>, work: F) -> (F::Output, Option<Verdict>) {
    let folded = Folded {
        limits,
        verdict: Mutex::new(None),
    };
    FOLDED
        .scope(folded, async move {
            let output = work.await;
            let verdict = FOLDED.with(|f| f.verdict.lock().expect("not poisoned").take());
            (output, verdict)
        })
        .await
}

/// The limits to check with an accept made now; none outside [`within`].
pub(crate) fn limits() -> Vec<Limit> {
    FOLDED.try_with(|f| f.limits.clone()).unwrap_or_default()
}

/// Keeps an accept's verdict for the caller of [`within`].
pub(crate) fn record(verdict: Verdict) {
    let _ = FOLDED.try_with(|f| *f.verdict.lock().expect("not poisoned") = Some(verdict));
}
