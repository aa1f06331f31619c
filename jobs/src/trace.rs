//! The spans a job leaves on its way through a worker, per the
//! OpenTelemetry messaging conventions.
//!
//! - Each claimed job gets a short `receive <queue>` CONSUMER span, a
//!   child of the `send <queue>` span that enqueued it (from the job's
//!   `traceparent`), from its claim until its settle is written. It
//!   records the queue wait, the attempt and the outcome, and links to
//!   the batch span that wrote it: searching Jaeger for the request's
//!   trace finds the job, and one click finds the batch.
//! - Each bulk write runs in a `process <queue>` CONSUMER span with
//!   `messaging.batch.message_count`. It links to every job's sender; a
//!   batch of one job is instead that sender's child, so a lone write
//!   shows in the request's own trace.
//!
//! With no collector configured these spans are never created.
use std::sync::Arc;

use chat_observability::{
    metrics::metrics,
    otel,
    propagate::{self, Linked},
    spans::{self, Delivery, Destination},
};
use chat_queue::{Claimed, QueueName};
use tracing::Span;

/// Where a job came from, kept in its task's data from claim to settle.
#[derive(Debug)]
pub struct Origin {
    /// The `send` span that enqueued the job, when it was traced.
    pub sender: Option<Linked>,
    /// The job's `receive` span; none when the job is untraced.
    pub span: Delivery,
}

pub type JobOrigin = Arc<Origin>;

impl Origin {
    /// An origin that leaves no span, for rows that no job carried.
    pub fn untraced() -> JobOrigin {
        Arc::new(Self {
            sender: None,
            span: Delivery::none(),
        })
    }

    /// Records how the job was settled: `acked`, `retry` or `dead`.
    pub fn settled(&self, outcome: &'static str) {
        self.span.settled(outcome);
    }
}

/// Records a just-claimed job's wait, and opens its `receive` span.
pub(crate) fn claimed(queue: QueueName, system: &'static str, job: &Claimed) -> JobOrigin {
    let waited_ms = (chat_links::now_millis() - job.ready_at).max(0);
    metrics().queue_wait(queue.as_str(), waited_ms as f64 / 1e3);
    // Senders only pass sampled contexts (see `spans::Accept::open`).
    let Some(sender) = job.trace.as_deref().and_then(propagate::sender) else {
        return Origin::untraced();
    };
    let span = Delivery::receive(
        Destination {
            queue: queue.as_str(),
            system,
        },
        &sender,
        &job.id,
        job.attempt,
        waited_ms,
    );
    Arc::new(Origin {
        sender: Some(sender),
        span,
    })
}

/// Opens a batch's `process` span over the jobs behind `origins` (one per
/// row, several rows per job for index jobs), and links each job's
/// `receive` span to it. Disabled when nothing is exported.
pub(crate) fn batch(queue: QueueName, system: &'static str, origins: &[&JobOrigin]) -> Span {
    if !otel::enabled() {
        return Span::none();
    }
    // An index job's rows share one origin, and two deliveries of one job
    // share a sender. Sorted, repeats sit side by side and go without
    // hashing every row (two hash sets per batch were 1% of a worker's CPU
    // at 100% sampling).
    let mut jobs: Vec<&JobOrigin> = origins.to_vec();
    jobs.sort_unstable_by_key(|o| Arc::as_ptr(o));
    jobs.dedup_by_key(|o| Arc::as_ptr(o));
    let mut senders: Vec<&Linked> = jobs.iter().filter_map(|o| o.sender.as_ref()).collect();
    senders.sort_unstable_by_key(|s| s.ids());
    senders.dedup_by_key(|s| s.ids());
    let span = spans::process(
        Destination {
            queue: queue.as_str(),
            system,
        },
        jobs.len(),
        &senders,
    );
    if let Some(batch) = propagate::linkable(&span) {
        for job in &jobs {
            job.span.link_to(&batch);
        }
    }
    span
}
