//! Load shedding on `/api/v1`: at most `max_concurrent` requests are
//! handled at once, and one more is answered 503 with `Retry-After` at
//! once instead of queueing without bound; a request that takes longer
//! than `timeout` (reading its body included, so a client sending it
//! slowly is cut off) is answered 503 as well, unless its write has
//! already reached storage: "retry later" would then apply it twice, so
//! the request is given [`OUTCOME_WAIT`] more to learn its outcome, and
//! otherwise answered "outcome unknown". Health and metrics are exempt,
//! so probes see a loaded server as alive.
use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::HeaderValue,
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;

use crate::{ApiError, under_api, write::Reached};

/// How much longer a timed-out request whose write reached storage waits
/// for that write's outcome: the intake's own bounds (a Redis restart
/// waited out, a response timeout) fit in it.
pub(crate) const OUTCOME_WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
pub struct OverloadLimits {
    pub max_concurrent: usize,
    pub timeout: Duration,
}

impl Default for OverloadLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 1024,
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Shedder {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl Shedder {
    pub(crate) fn new(limits: &OverloadLimits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            timeout: limits.timeout,
        }
    }
}

fn unavailable(detail: &str) -> Response {
    let mut response = ApiError::Overloaded(detail.to_owned()).into_response();
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    response
}

pub(crate) async fn shed(State(shedder): State<Shedder>, mut req: Request, next: Next) -> Response {
    if !under_api(req.uri().path()) {
        return next.run(req).await;
    }
    let Ok(_permit) = shedder.permits.clone().try_acquire_owned() else {
        return unavailable("the server is at its limit of concurrent requests");
    };
    let reached = Reached::default();
    req.extensions_mut().insert(reached.clone());
    let handling = next.run(req);
    tokio::pin!(handling);
    match tokio::time::timeout(shedder.timeout, &mut handling).await {
        Ok(response) => response,
        Err(_) if reached.is_set() => {
            match tokio::time::timeout(OUTCOME_WAIT, &mut handling).await {
                Ok(response) => response,
                Err(_) => {
                    tracing::warn!(
                        "a write outlasted its request's deadline; its outcome is unknown"
                    );
                    ApiError::outcome_unknown().into_response()
                }
            }
        }
        Err(_) => unavailable("the request took too long"),
    }
}
