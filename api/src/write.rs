//! What a write handler carries to storage besides its row: the marker
//! that tells the load shedder the write has reached storage, the
//! `Idempotency-Key` run it belongs to, and the rate limits the intake
//! checks in its accept.
//!
//! Once a write has reached storage, its outcome can no longer be "not
//! done, retry": the shedder then waits for it a while longer instead of
//! answering 503, and answers "outcome unknown" if it never learns it.
use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{extract::FromRequestParts, http::request::Parts};
use chat_store::{idempotency::Link, intake::WriteMeta, ratelimit::folded::Folded};

/// Set once the request's write has been handed to storage.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reached(Arc<AtomicBool>);

impl Reached {
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The extractor every write handler takes.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteContext {
    reached: Option<Reached>,
    idempotency: Option<Link>,
    /// The request's rate limits, when the limiter left them for the
    /// intake to check (see `rate_limit`).
    limits: Option<Folded>,
}

impl WriteContext {
    /// Marks the write as handed to storage: call it right before.
    pub(crate) fn reaching(&self) {
        if let Some(reached) = &self.reached {
            reached.0.store(true, Ordering::SeqCst);
        }
    }

    /// What the store's intake needs of this write.
    pub(crate) fn meta(&self, trace: Option<String>) -> WriteMeta {
        WriteMeta {
            trace,
            idempotency: self.idempotency.clone(),
            limits: self.limits.clone(),
        }
    }

    /// The idempotency run, for writes outside the intake.
    pub(crate) fn idempotency(&self) -> Option<&Link> {
        self.idempotency.as_ref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WriteContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            reached: parts.extensions.get::<Reached>().cloned(),
            idempotency: parts.extensions.get::<Link>().cloned(),
            limits: parts.extensions.get::<Folded>().cloned(),
        })
    }
}
