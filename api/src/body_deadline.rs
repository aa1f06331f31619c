//! A deadline on reading each request body, on every route the process
//! serves outside `/api/v1` (the dashboard's forms, the metrics, the
//! docs), where the load shedder's timeout does not reach: a client that
//! sends its body a byte at a time holds a connection and a task only
//! until the deadline, then its read fails with [`BodyDeadline`] and the
//! route answers its own way (the dashboard's forms, 400).
//!
//! The deadline runs from when the request arrived, not between chunks,
//! so a trickle of bytes cannot keep renewing it.
use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::Request,
    middleware::Next,
    response::Response,
};
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a body read past its deadline fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub struct BodyDeadline(pub Duration);

struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    within: Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        // What has already arrived is handed on, even late.
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        ready!(self.deadline.as_mut().poll(cx));
        Poll::Ready(Some(Err(axum::Error::new(BodyDeadline(self.within)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: every request's body must arrive within `within` of the
/// request itself. Under `/api/v1` the load shedder's request timeout,
/// which covers reading the body, already answers (503, or "outcome
/// unknown" once a write reached storage), so the body is left to it.
pub async fn limit(within: Duration, request: Request, next: Next) -> Response {
    if crate::under_api(request.uri().path()) {
        return next.run(request).await;
    }
    let deadline = Box::pin(tokio::time::sleep_until(Instant::now() + within));
    let request = request.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline,
            within,
        })
    });
    next.run(request).await
}
