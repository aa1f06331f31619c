//! The count marks under a sustained write rate: does `count_marks` stay
//! bounded while the `counts` task runs on its interval?
//!
//! Two writers (a worker's two batch writes in flight) persist messages
//! through the real bulk writer (`messages::upsert_all`, which marks their
//! chats) at `rate` rows a second, spread over `chats` chats, while the
//! scheduler's incremental recount (`recount_dirty`, with its round size)
//! runs every `interval`. The table's size is sampled every 10 seconds
//! (`COUNT(*)` itself reads the table, so not more often). At the
//! end the writes stop, one last run must leave no mark, and a full
//! recount must find every count already exact.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chat_store::{
    model::MessageRow,
    repo::{counts, messages},
};
use sea_orm::DatabaseConnection;

use crate::system::Deployment;

/// A worker's batch writes in flight.
const WRITERS: usize = 2;
/// The scheduler's round size (`PARENTS_PER_ROUND`).
const PARENTS_PER_ROUND: u64 = 100_000;

pub struct Options {
    pub rate: u64,
    pub duration: Duration,
    pub chats: usize,
    pub batch: usize,
    pub interval: Duration,
}

/// How often the table's size is read.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Run {
    took: Duration,
    marks: u64,
    parents: u64,
    /// The run failed (as a scheduler would record it), with this error.
    error: Option<String>,
}

pub async fn run(deployment: &Deployment, o: &Options) -> anyhow::Result<()> {
    let db = deployment.connect().await?;
    chat_links::db::migrate(&db).await?;
    let app = crate::counts::application_with_chats(&db, "marks", o.chats).await?;
    counts::recount_dirty(&db, PARENTS_PER_ROUND).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        writers.push(tokio::spawn(write(
            db.clone(),
            app,
            w,
            o.chats,
            o.batch,
            o.rate as f64 / WRITERS as f64,
            stop.clone(),
            written.clone(),
        )));
    }
    let recounter = tokio::spawn(recount(db.clone(), o.interval, stop.clone()));

    println!(
        "\n[{}] count marks at {} rows/s over {} chats, batches of {}, counts every {:?}, for {:?}",
        deployment.profile, o.rate, o.chats, o.batch, o.interval, o.duration
    );
    println!(
        "  {:>6} {:>12} {:>10} {:>12} {:>12}",
        "t (s)", "rows", "rows/s", "marks now", "marks max"
    );
    let started = Instant::now();
    let mut max_marks = 0;
    let mut samples = Vec::new();
    while started.elapsed() < o.duration {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let marks = counts::pending_marks(&db).await?;
        max_marks = max_marks.max(marks);
        samples.push(marks);
        let secs = started.elapsed().as_secs_f64();
        let rows = written.load(Ordering::Relaxed);
        println!(
            "  {:>6.0} {:>12} {:>10.0} {:>12} {:>12}",
            secs,
            rows,
            rows as f64 / secs,
            marks,
            max_marks
        );
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await??;
    }
    let runs = recounter.await??;
    let rows = written.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();

    let last = counts::recount_dirty(&db, PARENTS_PER_ROUND).await?;
    let left = counts::pending_marks(&db).await?;
    let full = counts::recount_all(&db, 1_000).await?;
    let stored = messages::total(&db).await?;

    let failed: Vec<&Run> = runs.iter().filter(|r| r.error.is_some()).collect();
    if let Some(first) = failed.first() {
        println!(
            "  {} of {} runs failed; the first: {}",
            failed.len(),
            runs.len(),
            first.error.as_deref().unwrap_or("")
        );
    }
    let slowest = runs.iter().map(|r| r.took).max().unwrap_or_default();
    let mean = runs.iter().map(|r| r.took.as_secs_f64()).sum::<f64>() / runs.len().max(1) as f64;
    let marks_per_run = runs.iter().map(|r| r.marks).max().unwrap_or(0);
    let parents = runs.iter().map(|r| r.parents).max().unwrap_or(0);
    // The second half against the first: bounded means no growth.
    let half = samples.len() / 2;
    let max_of = |s: &[u64]| s.iter().copied().max().unwrap_or(0);
    println!(
        "  {} runs: mean {:.2} s, slowest {:.2?}, at most {} marks and {} parents per run",
        runs.len(),
        mean,
        slowest,
        marks_per_run,
        parents
    );
    println!(
        "  after the writes: last run consumed {} marks, {} left; full recount repaired {} of {} chats; {} messages stored, {} written",
        last.marks,
        left,
        full.repaired(),
        full.chats_checked,
        stored,
        rows
    );
    println!(
        "RESULT marks profile={} rate={:.0} secs={:.0} marks_max={} marks_max_first_half={} marks_max_second_half={} runs={} runs_failed={} run_mean_s={:.2} run_max_s={:.2} left={} drift={}",
        deployment.profile,
        rows as f64 / secs,
        secs,
        max_marks,
        max_of(&samples[..half]),
        max_of(&samples[half..]),
        runs.len(),
        failed.len(),
        mean,
        slowest.as_secs_f64(),
        left,
        full.repaired()
    );
    Ok(())
}

/// One of the worker's writes in flight: batches of `batch` rows at
/// `rate` rows a second, each row to the next of this writer's chats.
#[allow(clippy::too_many_arguments)]
async fn write(
    db: DatabaseConnection,
    app: i64,
    writer: usize,
    chats_n: usize,
    batch: usize,
    rate: f64,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mine: Vec<i64> = (1..=chats_n as i64)
        .filter(|c| (*c as usize) % WRITERS == writer)
        .collect();
    let mut next = vec![0i64; mine.len()];
    let mut turn = 0usize;
    let every = Duration::from_secs_f64(batch as f64 / rate);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let now = chat_links::now();
        let rows: Vec<MessageRow> = (0..batch)
            .map(|_| {
                // A stride through the chats, so a batch touches many.
                turn = (turn + 7_919) % mine.len();
                next[turn] += 1;
                MessageRow {
                    application_id: app,
                    chat_number: mine[turn],
                    number: next[turn],
                    body: "m".into(),
                    version: 1,
                    created_at: now,
                    updated_at: now,
                }
            })
            .collect();
        messages::upsert_all(&db, &rows).await?;
        written.fetch_add(rows.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// The scheduler's `counts` task, on its interval.
async fn recount(
    db: DatabaseConnection,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let started = Instant::now();
        runs.push(match counts::recount_dirty(&db, PARENTS_PER_ROUND).await {
            Ok(r) => Run {
                took: started.elapsed(),
                marks: r.marks,
                parents: r.chats_checked + r.applications_checked,
                error: None,
            },
            Err(e) => Run {
                took: started.elapsed(),
                error: Some(e.to_string()),
                ..Run::default()
            },
        });
    }
    Ok(runs)
}
