//! A rate-limit check made inside another round trip. The API hands a
//! write's limits to the intake in its [`WriteMeta`](crate::intake::WriteMeta),
//! and a read's with its pending read
//! ([`Intake::pending_message`](crate::intake::Intake::pending_message));
//! an intake that [folds](crate::intake::Intake::folds_rate_limits) them
//! checks and counts them in the script that accepts the write or reads
//! the entry, instead of the limiter spending a call of its own, and leaves
//! its verdict in the same [`Folded`] for the caller.
use std::sync::{Arc, Mutex};

use super::{Limit, Verdict};

/// A request's limits on their way into an accept or a pending read, and
/// the verdict on the way back. Clones share the verdict.
#[derive(Clone, Debug)]
pub struct Folded {
    limits: Arc<[Limit]>,
    verdict: Arc<Mutex<Option<Verdict>>>,
}

impl Folded {
    pub fn new(limits: Vec<Limit>) -> Self {
        Self {
            limits: limits.into(),
            verdict: Arc::default(),
        }
    }

    /// The limits to check with the accept or the read.
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// The verdict of the accept or read that checked the limits; `None`
    /// when none did (the request failed before one, or had nothing to
    /// write), so they are unchecked and uncounted.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict.lock().expect("not poisoned").clone()
    }

    /// Keeps the verdict for the caller.
    pub(crate) fn record(&self, verdict: Verdict) {
        *self.verdict.lock().expect("not poisoned") = Some(verdict);
    }
}
