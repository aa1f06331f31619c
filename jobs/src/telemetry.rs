//! What the bulk writers report to the process's metrics: each write's
//! size, duration and outcome, and how long after its acceptance each row
//! reached the database or the search index.
use std::time::Instant;

use chat_links::StoreError;
use chat_observability::metrics::metrics;
use chat_ops::pulse::LagStage;
use chat_queue::QueueName;
use chrono::{DateTime, Utc};

/// Records one bulk write of `rows` rows that started at `started`, and,
/// when it succeeded, each row's lag to `stage` from its acceptance time.
pub(crate) fn record_write(
    queue: QueueName,
    stage: LagStage,
    started: Instant,
    result: &Result<(), StoreError>,
    accepted: impl ExactSizeIterator<Item = DateTime<Utc>>,
) {
    let m = metrics();
    m.bulk_write(
        queue.as_str(),
        accepted.len(),
        result.is_ok(),
        started.elapsed().as_secs_f64(),
    );
    if result.is_ok() {
        let now = Utc::now();
        // A row's updated_at is stamped when the API accepted it.
        let lags: Vec<_> = accepted.map(|at| now - at).collect();
        m.write_lags(stage.as_str(), lags.iter().map(|lag| lag.as_seconds_f64()));
        crate::pulse::lags(
            stage,
            lags.iter().map(|lag| lag.num_milliseconds().max(0) as u64),
        );
    }
}
