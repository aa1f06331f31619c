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

async fn submit_all(writer: Arc<Picky>, gate: Arc<Gate>, rows: u32) -> Vec<Result<(), WriteError>> {
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
