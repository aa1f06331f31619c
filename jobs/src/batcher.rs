//! Coalescing jobs into bulk writes.
//!
//! Handlers submit rows and wait; one task per queue collects up to
//! `max_rows` rows or waits `linger`, whichever comes first, collapses
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
use chat_queue::QueueName;
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    time::{Instant, timeout_at},
};
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
    /// SQLite has one writer, so there it stays 1.
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

type Reply = oneshot::Sender<Result<(), WriteError>>;

/// One row waiting for its batch: the row, whom to tell, and its job.
type Item<R> = (R, Reply, JobOrigin);

/// The queue a batcher writes for, and what that queue runs on, as its
/// batch spans name them.
#[derive(Clone, Copy, Debug)]
pub struct BatchLabel {
    pub queue: QueueName,
    pub system: &'static str,
}

#[derive(Clone)]
pub struct Batcher<R> {
    tx: mpsc::Sender<Item<R>>,
}

impl<R: Coalesce> Batcher<R> {
    /// `gate` is the backend `writer` writes to.
    pub fn spawn(
        writer: Arc<dyn BulkWriter<R>>,
        config: BatchConfig,
        label: BatchLabel,
        gate: Arc<Gate>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.max_rows * 4);
        tokio::spawn(run(rx, writer, config, label, gate));
        Self { tx }
    }

    /// Waits until `row` is committed; an error says why it was not.
    pub async fn submit(&self, row: R, origin: JobOrigin) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        // A batcher gone is this process stopping: hand the job back whole.
        self.tx
            .send((row, reply, origin))
            .await
            .map_err(|_| WriteError::Outage("the batcher has stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| WriteError::Outage("the batcher dropped the row".to_owned()))?
    }
}

async fn run<R: Coalesce>(
    mut rx: mpsc::Receiver<Item<R>>,
    writer: Arc<dyn BulkWriter<R>>,
    config: BatchConfig,
    label: BatchLabel,
    gate: Arc<Gate>,
) {
    let in_flight = config.writes_in_flight.max(1);
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            break;
        };
        let mut batch: Vec<Item<R>> = Vec::with_capacity(config.max_rows);
        batch.push(first);
        let deadline = Instant::now() + config.linger;
        while batch.len() < config.max_rows {
            match timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                _ => break,
            }
        }
        let (writer, gate) = (writer.clone(), gate.clone());
        tokio::spawn(async move {
            let origins: Vec<&JobOrigin> = batch.iter().map(|(_, _, o)| o).collect();
            let span = trace::batch(label.queue, label.system, &origins);
            let writer = Bounded {
                writer: writer.as_ref(),
                timeout: config.write_timeout,
            };
            flush(batch, &writer, &gate).instrument(span).await;
            drop(slot);
        });
    }
    // Every sender is gone: let the writes in flight finish.
    let _ = slots.acquire_many(in_flight as u32).await;
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

async fn flush<R: Coalesce>(batch: Vec<Item<R>>, writer: &Bounded<'_, R>, gate: &Gate) {
    let (keyed_replies, rows): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|(row, reply, _)| ((row.key(), reply), row))
        .unzip();
    if let Some((_, error)) = gate.reason() {
        for (_, reply) in keyed_replies {
            let _ = reply.send(Err(WriteError::Outage(error.clone())));
        }
        return;
    }
    let rows = coalesce(rows);
    let started = Instant::now();
    let failure = match writer.write_contended(&rows).await {
        Ok(()) => {
            tracing::debug!(jobs = keyed_replies.len(), rows = rows.len(), elapsed = ?started.elapsed(), "batch committed");
            for (_, reply) in keyed_replies {
                let _ = reply.send(Ok(()));
            }
            return;
        }
        Err(e) => {
            tracing::Span::current().record("otel.status_code", "error");
            classify(&e, gate)
        }
    };
    let mut outcome: HashMap<R::Key, Result<(), WriteError>> = HashMap::new();
    match failure {
        WriteError::Outage(e) => {
            tracing::warn!(jobs = keyed_replies.len(), error = %e, "batch not written: its backend is unavailable; handing its jobs back");
            for row in &rows {
                outcome.insert(row.key(), Err(WriteError::Outage(e.clone())));
            }
        }
        WriteError::Failed(e) => {
            tracing::warn!(jobs = keyed_replies.len(), error = %e, "batch failed; writing its rows one by one");
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
    for (key, reply) in keyed_replies {
        let result = outcome
            .get(&key)
            .cloned()
            .unwrap_or_else(|| Err(WriteError::Failed("row missing from its batch".into())));
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Row(u32, i64);

    impl Coalesce for Row {
        type Key = u32;
        fn key(&self) -> u32 {
            self.0
        }
        fn version(&self) -> i64 {
            self.1
        }
    }

    #[test]
    fn coalescing_keeps_the_newest_state_of_each_row() {
        let rows = coalesce(vec![Row(1, 5), Row(2, 1), Row(1, 9), Row(1, 7)]);
        assert_eq!(rows, vec![Row(1, 9), Row(2, 1)]);
    }

    /// Counts how many writes overlap, and every row written.
    #[derive(Default)]
    struct SlowWriter {
        now: std::sync::atomic::AtomicUsize,
        peak: std::sync::atomic::AtomicUsize,
        written: std::sync::Mutex<Vec<u32>>,
    }

    #[async_trait]
    impl BulkWriter<Row> for SlowWriter {
        async fn write(&self, rows: &[Row]) -> Result<(), StoreError> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.now.fetch_add(1, SeqCst) + 1;
            self.peak.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.written
                .lock()
                .unwrap()
                .extend(rows.iter().map(|r| r.0));
            self.now.fetch_sub(1, SeqCst);
            Ok(())
        }
    }

    async fn peak_writes(writes_in_flight: usize) -> usize {
        let writer = Arc::new(SlowWriter::default());
        let batcher = Batcher::spawn(
            writer.clone(),
            BatchConfig {
                max_rows: 10,
                linger: Duration::from_millis(1),
                writes_in_flight,
                write_timeout: Duration::from_secs(10),
            },
            BatchLabel {
                queue: QueueName::Messages,
                system: "test",
            },
            open_gate(),
        );
        let submissions = (0..100).map(|i| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit(Row(i, 1), trace::Origin::untraced()).await })
        });
        for s in futures::future::join_all(submissions).await {
            assert_eq!(s.unwrap(), Ok(()));
        }
        let mut written = writer.written.lock().unwrap().clone();
        written.sort_unstable();
        assert_eq!(written, (0..100).collect::<Vec<_>>(), "every row once");
        writer.peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn batches_overlap_up_to_the_configured_writes_in_flight() {
        assert_eq!(peak_writes(1).await, 1);
        assert_eq!(peak_writes(3).await, 3);
    }

    /// A gate whose probe always answers.
    fn open_gate() -> Arc<Gate> {
        Gate::new("test", Arc::new(|| Box::pin(async { Ok(()) })))
    }

    /// Fails writes holding row `bad` as bad data, and every write while
    /// `down` is set as an outage; counts the writes it was asked for.
    #[derive(Default)]
    struct Picky {
        bad: Option<u32>,
        down: std::sync::atomic::AtomicBool,
        calls: std::sync::atomic::AtomicUsize,
        stall: bool,
    }

    #[async_trait]
    impl BulkWriter<Row> for Picky {
        async fn write(&self, rows: &[Row]) -> Result<(), StoreError> {
            use std::sync::atomic::Ordering::SeqCst;
            self.calls.fetch_add(1, SeqCst);
            if self.stall {
                futures::future::pending::<()>().await;
            }
            if self.down.load(SeqCst) {
                return Err(StoreError::Unavailable("connection refused".into()));
            }
            if rows.iter().any(|r| Some(r.0) == self.bad) {
                return Err(StoreError::Other("value out of range".into()));
            }
            Ok(())
        }
    }

    async fn submit_all(
        writer: Arc<Picky>,
        gate: Arc<Gate>,
        rows: u32,
    ) -> Vec<Result<(), WriteError>> {
        let batcher = Batcher::spawn(
            writer,
            BatchConfig {
                max_rows: 100,
                linger: Duration::from_millis(20),
                writes_in_flight: 1,
                write_timeout: Duration::from_millis(200),
            },
            BatchLabel {
                queue: QueueName::Messages,
                system: "test",
            },
            gate,
        );
        let submissions = (0..rows).map(|i| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit(Row(i, 1), trace::Origin::untraced()).await })
        });
        futures::future::join_all(submissions)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    #[tokio::test]
    async fn a_bad_row_fails_alone_and_the_others_commit() {
        let writer = Arc::new(Picky {
            bad: Some(3),
            ..Default::default()
        });
        let results = submit_all(writer.clone(), open_gate(), 10).await;
        for (i, r) in results.iter().enumerate() {
            match i {
                3 => assert!(matches!(r, Err(WriteError::Failed(_))), "{r:?}"),
                _ => assert_eq!(r, &Ok(()), "row {i}"),
            }
        }
        let calls = writer.calls.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(calls, 11, "the batch, then each of its ten rows");
    }

    #[tokio::test]
    async fn an_outage_hands_every_row_back_without_writing_them_one_by_one() {
        let writer = Arc::new(Picky::default());
        writer.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let gate = open_gate();
        let results = submit_all(writer.clone(), gate.clone(), 10).await;
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(WriteError::Outage(_)))),
            "{results:?}"
        );
        assert_eq!(writer.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(gate.is_closed(), "the outage closed the gate");

        // While the gate is closed, batches do not even try.
        let more = submit_all(writer.clone(), gate, 5).await;
        assert!(more.iter().all(|r| matches!(r, Err(WriteError::Outage(_)))));
        assert_eq!(writer.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_write_with_no_answer_is_an_outage_after_the_write_timeout() {
        let writer = Arc::new(Picky {
            stall: true,
            ..Default::default()
        });
        let gate = open_gate();
        let started = Instant::now();
        let results = submit_all(writer, gate.clone(), 3).await;
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(WriteError::Outage(_))))
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(gate.is_closed());
    }
}
