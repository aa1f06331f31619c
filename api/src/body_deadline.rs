//! A deadline on reading each request body, on every route the process
//! serves (the API, the dashboard's forms, the metrics): a client that
//! sends its body a byte at a time holds a connection and a task only
//! until the deadline, then its read fails with [`BodyDeadline`], which
//! the API answers 408.
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
/// request itself.
pub async fn limit(within: Duration, request: Request, next: Next) -> Response {
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

/// Whether a body read failed on its deadline.
pub(crate) fn passed(e: &axum::Error) -> bool {
    use std::error::Error;
    let mut source: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(e) = source {
        if e.is::<BodyDeadline>() {
            return true;
        }
        source = e.source();
    }
    false
}
