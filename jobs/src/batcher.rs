//! Coalescing jobs into bulk writes.
//!
//! Handlers submit rows and wait; one task per queue (a
//! `chat_links::grouping::Group`) collects up to `max_rows` rows or waits
//! `linger`, whichever comes first, collapses
//! several states of the same row into the newest (highest version), and
//! writes the batch in one statement. Every waiting handler then learns
//! whether its row committed, so each job is acked only after the commit.
//!
//! What a failed batch means decides what happens next:
//! - the backend is down (unreachable, timed out after `write_timeout`,
//!   refusing writes, overloaded): the batch's [`Gate`] closes and every
//!   row answers [`WriteError::Outage`], so its job is handed back without
//!   spending an attempt. While the gate is closed, batches fail this way at
//!   once, without trying the backend;
//! - contention (a deadlock, a lock wait): the batch is written again, as
//!   it is;
//! - anything else: the rows are written one by one, so one bad row fails
//!   only its own job ([`WriteError::Failed`]). Should the backend go down
//!   meanwhile, the rows not yet written answer as an outage.
//!
//! Each row arrives with its job's [`JobOrigin`], and each batch is written
//! inside a `process <queue>` span linked to those jobs (see `trace`).
use std::{collections::HashMap, hash::Hash, sync::Arc, time::Duration};

use async_trait::async_trait;
use chat_links::StoreError;
use chat_links::grouping::{Group, GroupWork, Grouping, Stopped};
use chat_queue::QueueName;
use tokio::time::Instant;
use tracing::Instrument;

use crate::{
    outage::Gate,
    trace::{self, JobOrigin},
};

/// A row state that can be coalesced with others of the same key.
pub trait Coalesce: Clone + Send + Sync + 'static {
    type Key: Hash + Eq + Send + Clone;
    fn key(&self) -> Self::Key;
    fn version(&self) -> i64;
}

#[async_trait]
pub trait BulkWriter<R>: Send + Sync + 'static {
    /// Writes every row atomically (one statement or one transaction), or
    /// none of them.
    async fn write(&self, rows: &[R]) -> Result<(), StoreError>;
}

#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    pub max_rows: usize,
    pub linger: Duration,
    /// Batches written at once. More than one lets a batch fill (and its
    /// jobs be claimed, decoded and acked) while another is in the
    /// database; the version guard makes their commit order irrelevant.
    /// SQLite has one writer, so a queue whose rows go there keeps 1.
    pub writes_in_flight: usize,
    /// Longest a bulk write may take before its backend counts as down. A
    /// frozen server answers nothing; without this bound its batches, and
    /// the jobs waiting on them, would wait forever.
    pub write_timeout: Duration,
}

/// Times a batch in contention is written again before its rows are
/// handed back as in an outage.
const CONTENTION_TRIES: u32 = 3;

/// Why a row was not written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// Its backend is down: nothing is wrong with the row, and its job must
    /// not spend an attempt.
    Outage(String),
    /// The write of this row itself failed.
    Failed(String),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Outage(e) => write!(f, "backend unavailable: {e}"),
            WriteError::Failed(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for WriteError {}

/// One row waiting for its batch, and its job.
type Item<R> = (R, JobOrigin);

/// The queue a batcher writes for, and what that queue runs on, as its
/// batch spans name them.
#[derive(Clone, Copy, Debug)]
pub struct BatchLabel {
    pub queue: QueueName,
    pub system: &'static str,
}

/// Gathers rows into batches and writes each in one statement.
#[derive(Clone)]
pub struct Batcher<R> {
    group: Group<Item<R>, Result<(), WriteError>>,
}

impl<R: Coalesce> Batcher<R> {
    /// `gate` is the backend `writer` writes to.
    pub fn spawn(
        writer: Arc<dyn BulkWriter<R>>,
        config: BatchConfig,
        label: BatchLabel,
        gate: Arc<Gate>,
    ) -> Self {
        let grouping = Grouping {
            max: config.max_rows,
            linger: config.linger,
            in_flight: config.writes_in_flight,
        };
        let work = BatchWork {
            writer,
            timeout: config.write_timeout,
            label,
            gate,
        };
        Self {
            group: Group::spawn(Arc::new(work), grouping),
        }
    }

    /// Waits until `row` is committed; an error says why it was not.
    pub async fn submit(&self, row: R, origin: JobOrigin) -> Result<(), WriteError> {
        // A batcher gone is this process stopping: hand the job back whole.
        self.group
            .ask((row, origin))
            .await
            .map_err(|Stopped| WriteError::Outage("the batcher has stopped".to_owned()))?
    }
}

struct BatchWork<R> {
    writer: Arc<dyn BulkWriter<R>>,
    timeout: Duration,
    label: BatchLabel,
    gate: Arc<Gate>,
}

#[async_trait]
impl<R: Coalesce> GroupWork<Item<R>> for BatchWork<R> {
    type Answer = Result<(), WriteError>;

    async fn answer(&self, batch: Vec<Item<R>>) -> Vec<Result<(), WriteError>> {
        let origins: Vec<&JobOrigin> = batch.iter().map(|(_, o)| o).collect();
        let span = trace::batch(self.label.queue, self.label.system, &origins);
        let writer = Bounded {
            writer: self.writer.as_ref(),
            timeout: self.timeout,
        };
        let rows = batch.into_iter().map(|(row, _)| row).collect();
        flush(rows, &writer, &self.gate).instrument(span).await
    }
}

/// Keeps the newest state per key, in first-seen order.
pub fn coalesce<R: Coalesce>(rows: impl IntoIterator<Item = R>) -> Vec<R> {
    let mut index: HashMap<R::Key, usize> = HashMap::new();
    let mut out: Vec<R> = Vec::new();
    for row in rows {
        match index.get(&row.key()) {
            Some(&i) if out[i].version() >= row.version() => {}
            Some(&i) => out[i] = row,
            None => {
                index.insert(row.key(), out.len());
                out.push(row);
            }
        }
    }
    out
}

/// A writer whose every write fails as an outage after `timeout`.
struct Bounded<'a, R> {
    writer: &'a dyn BulkWriter<R>,
    timeout: Duration,
}

impl<R: Coalesce> Bounded<'_, R> {
    async fn write(&self, rows: &[R]) -> Result<(), StoreError> {
        match tokio::time::timeout(self.timeout, self.writer.write(rows)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Writes `rows`, again while the failure is contention.
    async fn write_contended(&self, rows: &[R]) -> Result<(), StoreError> {
        let mut tries = 1;
        loop {
            match self.write(rows).await {
                Err(e) if e.is_contention() && tries < CONTENTION_TRIES => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "write in contention; writing it again");
                    let pause = rand::random_range(5..50);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                other => return other,
            }
        }
    }
}

/// What a failure means for the rows that met it.
fn classify(e: &StoreError, gate: &Gate) -> WriteError {
    if e.is_contention() {
        // Still contended after its tries: hand it back, but the backend
        // itself answers, so the gate stays open.
        WriteError::Outage(e.to_string())
    } else if e.is_unavailable() {
        gate.close(&e.to_string());
        WriteError::Outage(e.to_string())
    } else {
        WriteError::Failed(e.to_string())
    }
}

/// Writes `rows` and answers each, in order.
async fn flush<R: Coalesce>(
    rows: Vec<R>,
    writer: &Bounded<'_, R>,
    gate: &Gate,
) -> Vec<Result<(), WriteError>> {
    let keys: Vec<R::Key> = rows.iter().map(Coalesce::key).collect();
    if let Some((_, error)) = gate.reason() {
        return keys
            .iter()
            .map(|_| Err(WriteError::Outage(error.clone())))
            .collect();
    }
    let rows = coalesce(rows);
    let started = Instant::now();
    let failure = match writer.write_contended(&rows).await {
        Ok(()) => {
            tracing::debug!(jobs = keys.len(), rows = rows.len(), elapsed = ?started.elapsed(), "batch committed");
            return keys.iter().map(|_| Ok(())).collect();
        }
        Err(e) => {
            chat_observability::spans::failed(&tracing::Span::current());
            classify(&e, gate)
        }
    };
    let mut outcome: HashMap<R::Key, Result<(), WriteError>> = HashMap::new();
    match failure {
        WriteError::Outage(e) => {
            tracing::warn!(jobs = keys.len(), error = %e, "batch not written: its backend is unavailable; handing its jobs back");
            for row in &rows {
                outcome.insert(row.key(), Err(WriteError::Outage(e.clone())));
            }
        }
        WriteError::Failed(e) => {
            tracing::warn!(jobs = keys.len(), error = %e, "batch failed; writing its rows one by one");
            let mut down: Option<String> = None;
            for row in rows {
                let result = match &down {
                    Some(e) => Err(WriteError::Outage(e.clone())),
                    None => match writer.write_contended(std::slice::from_ref(&row)).await {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            let failure = classify(&e, gate);
                            if let WriteError::Outage(e) = &failure {
                                down = Some(e.clone());
                            }
                            Err(failure)
                        }
                    },
                };
                outcome.insert(row.key(), result);
            }
        }
    }
    keys.iter()
        .map(|key| {
            outcome
                .get(key)
                .cloned()
                .unwrap_or_else(|| Err(WriteError::Failed("row missing from its batch".into())))
        })
        .collect()
}

#[cfg(test)]
mod tests;
