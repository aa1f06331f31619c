//! The spans around an accepted write, per the OpenTelemetry messaging
//! conventions: `reserve …` (the number or the version), and inside it
//! `send <queue>`, a PRODUCER span whose `traceparent` the job carries so
//! the worker's spans continue this request's trace. Both profiles
//! reserve and enqueue in one atomic step, so the two spans cover the
//! same call; they stay separate because an SRE looks for each by name.
use chat_links::StoreError;
use chat_observability::spans::{self, Destination};
use chat_queue::QueueName;
use chat_store::intake::WriteMeta;

use crate::{AppState, write::WriteContext};

/// What an accept reserves, as its span is named.
#[derive(Clone, Copy)]
pub(crate) enum Reserving {
    ChatNumber,
    MessageNumber,
    Version,
}

impl Reserving {
    fn what(self) -> &'static str {
        match self {
            Reserving::ChatNumber => "chat number",
            Reserving::MessageNumber => "message number",
            Reserving::Version => "version",
        }
    }
}

/// Runs `accept` (an intake write, given what its job carries: the
/// `traceparent` and the idempotency run) inside the reserve and send
/// spans; when the request is not sampled (or nothing is exported), just
/// runs it, and the job carries no trace. Skipping the unsampled ones
/// matters at a low sampling ratio: building spans and a `traceparent`
/// that nobody records cost as much per request as recording them.
pub(crate) async fn traced<T>(
    state: &AppState,
    write: &WriteContext,
    reserving: Reserving,
    queue: QueueName,
    accept: impl AsyncFnOnce(WriteMeta) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    write.reaching();
    let to = Destination {
        queue: queue.as_str(),
        system: state.deps.queue.system(),
    };
    let Some(spans) = spans::Accept::open(reserving.what(), to) else {
        return accept(write.meta(None)).await;
    };
    let result = accept(write.meta(spans.traceparent())).await;
    if result.is_err() {
        spans.failed();
    }
    result
}
