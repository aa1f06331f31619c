//! The spike behind the queue decision in ARCHITECTURE.md: apalis-redis
//! 1.0.0 and apalis-sqlite 1.0.0 against our own apalis `Backend`, same
//! machine, same job counts, no-op handler. Prints numbers; asserts nothing.
//! Uses the local Redis on 6379 and removes the keys it made.
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use apalis::prelude::*;
use apalis_redis::{Config, RedisStorage};
use chat_queue::{JobQueue, QueueName, RedisStreamQueue};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Job {
    n: u64,
}

async fn handler(_j: Job, counter: Data<Arc<AtomicUsize>>) -> Result<(), BoxDynError> {
    counter.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn apalis_run(n: usize, queue: &str) -> String {
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let cfg = Config::default().queue(queue).batch_size(500);
    let mut storage: RedisStorage<Job, _> = RedisStorage::new(conn).with_config(cfg);
    let t = Instant::now();
    for chunk in (0..n as u64).collect::<Vec<_>>().chunks(1000) {
        storage
            .push_bulk(chunk.iter().map(|&n| Job { n }).collect())
            .await
            .unwrap();
    }
    let push = t.elapsed();
    let counter = Arc::new(AtomicUsize::new(0));
    let c2 = counter.clone();
    let worker = WorkerBuilder::new(format!("spike-{}", std::process::id()))
        .backend(
            storage
                .clone()
                .poll_with_interval(Duration::from_millis(50)),
        )
        .data(c2)
        .concurrency(1000)
        .build(handler);
    let started = Instant::now();
    let run = tokio::spawn(async move { worker.run().await });
    let deadline = started + Duration::from_secs(60);
    while counter.load(Ordering::Relaxed) < n && Instant::now() < deadline && !run.is_finished() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done = counter.load(Ordering::Relaxed);
    let el = started.elapsed();
    let outcome = if run.is_finished() {
        format!("worker exited: {:?}", run.await)
    } else {
        run.abort();
        "worker running".into()
    };
    format!(
        "apalis-redis: {n} jobs pushed in {push:?}; drained {done} in {el:?} ({:.0}/s); {outcome}",
        done as f64 / el.as_secs_f64()
    )
}

async fn streams_run(n: usize, prefix: &str) -> String {
    let q = RedisStreamQueue::connect("redis://127.0.0.1:6379", prefix, Duration::from_secs(30))
        .await
        .unwrap();
    let t = Instant::now();
    let mut pushes = Vec::new();
    for i in 0..n {
        let q = q.clone();
        pushes.push(tokio::spawn(async move {
            q.enqueue(QueueName::Messages, format!("{{\"n\":{i}}}"))
                .await
                .unwrap()
        }));
    }
    for p in pushes {
        p.await.unwrap();
    }
    let push = t.elapsed();
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let jobs = q
            .claim(QueueName::Messages, "spike", 500, Duration::from_millis(50))
            .await
            .unwrap();
        if jobs.is_empty() {
            break;
        }
        done += jobs.len();
        q.ack(QueueName::Messages, &jobs).await.unwrap();
    }
    let el = started.elapsed();
    format!(
        "redis streams: {n} jobs pushed in {push:?}; drained {done} in {el:?} ({:.0}/s)",
        done as f64 / el.as_secs_f64()
    )
}

async fn streams_apalis_run(n: usize, prefix: &str) -> String {
    use apalis::prelude::AcknowledgementExt;
    use chat_jobs::{
        backend::QueueBackend,
        pulse::Tally,
        settle::{Acker, RetryPolicy, Settler},
    };
    let q = RedisStreamQueue::connect("redis://127.0.0.1:6379", prefix, Duration::from_secs(30))
        .await
        .unwrap();
    let mut pushes = Vec::new();
    for i in 0..n {
        let q = q.clone();
        pushes.push(tokio::spawn(async move {
            q.enqueue(QueueName::Messages, format!("{{\"n\":{i}}}"))
                .await
                .unwrap()
        }));
    }
    for p in pushes {
        p.await.unwrap();
    }
    let queue: Arc<dyn JobQueue> = q.clone();
    let tally = Arc::new(Tally::default());
    let settler = Settler {
        queue: queue.clone(),
        name: QueueName::Messages,
        acker: Acker::spawn(queue.clone(), QueueName::Messages),
        policy: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
        tally: tally.clone(),
    };
    let counter = Arc::new(AtomicUsize::new(0));
    let worker = WorkerBuilder::new(format!("spike-ours-{}", std::process::id()))
        .backend(QueueBackend::<Job>::new(
            queue.clone(),
            QueueName::Messages,
            500,
            8,
            tally,
        ))
        .data(counter.clone())
        .ack_with(settler)
        .concurrency(1000)
        .build(handler);
    let started = Instant::now();
    let run = tokio::spawn(async move { worker.run().await });
    let deadline = started + Duration::from_secs(60);
    while counter.load(Ordering::Relaxed) < n && Instant::now() < deadline && !run.is_finished() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done = counter.load(Ordering::Relaxed);
    let el = started.elapsed();
    run.abort();
    format!(
        "our Backend on streams, apalis worker: drained {done} of {n} in {el:?} ({:.0}/s)",
        done as f64 / el.as_secs_f64()
    )
}

async fn apalis_sqlite_run(n: usize, cleanup: bool) -> String {
    use apalis_sqlite::{Config as SConfig, SqliteStorage};
    let path = format!("/tmp/spike-asq-{}-{cleanup}.db", std::process::id());
    let _ = std::fs::remove_file(&path);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{path}?mode=rwc"))
        .await
        .unwrap();
    SqliteStorage::<()>::setup(&pool).await.unwrap();
    let mut storage = SqliteStorage::<Job>::new(&pool)
        .with_config(SConfig::default().queue("spike").batch_size(500));
    for chunk in (0..n as u64).collect::<Vec<_>>().chunks(1000) {
        storage
            .push_bulk(chunk.iter().map(|&n| Job { n }).collect())
            .await
            .unwrap();
    }
    let counter = Arc::new(AtomicUsize::new(0));
    let worker = WorkerBuilder::new(format!("spike-sq-{}-{cleanup}", std::process::id()))
        .backend(
            storage
                .clone()
                .poll_with_interval(Duration::from_millis(20)),
        )
        .data(counter.clone())
        .concurrency(1000)
        .build(handler);
    let run = tokio::spawn(async move { worker.run().await });
    let cleaner = if cleanup {
        let pool = pool.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = sqlx::query("DELETE FROM Jobs WHERE status = 'Done'")
                    .execute(&pool)
                    .await;
            }
        }))
    } else {
        None
    };
    let started = Instant::now();
    let tenth = n / 10;
    let mut marks = Vec::new();
    let deadline = started + Duration::from_secs(600);
    while marks.len() < 10 && Instant::now() < deadline && !run.is_finished() {
        let c = counter.load(Ordering::Relaxed);
        while marks.len() < 10 && c >= tenth * (marks.len() + 1) {
            marks.push(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    run.abort();
    if let Some(c) = cleaner {
        c.abort();
    }
    let _ = std::fs::remove_file(&path);
    if marks.len() < 10 {
        return format!(
            "apalis-sqlite (cleanup={cleanup}): only {} of {n} in {:?}",
            counter.load(Ordering::Relaxed),
            started.elapsed()
        );
    }
    let rate = |i: usize| {
        tenth as f64 / (marks[i] - if i == 0 { Duration::ZERO } else { marks[i - 1] }).as_secs_f64()
    };
    format!(
        "apalis-sqlite (cleanup={cleanup}): {n} jobs in {:?}; first tenth {:.0}/s, last tenth {:.0}/s, last/first {:.2}",
        marks[9],
        rate(0),
        rate(9),
        rate(9) / rate(0)
    )
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("sqlite") {
        let n: usize = std::env::args()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(20_000);
        println!("{}", apalis_sqlite_run(n, false).await);
        println!("{}", apalis_sqlite_run(n, true).await);
        return;
    }
    let id = std::process::id();
    for n in [7_000usize, 20_000] {
        println!("{}", apalis_run(n, &format!("spike{id}-{n}")).await);
        println!("{}", streams_run(n, &format!("spike{id}-{n}:")).await);
        println!(
            "{}",
            streams_apalis_run(n, &format!("spike{id}-{n}b:")).await
        );
    }
    remove_keys(&format!("spike{id}-*")).await;
    remove_keys("core:apalis:*").await;
}

async fn remove_keys(pattern: &str) {
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    for chunk in keys.chunks(500) {
        let _: i64 = redis::cmd("DEL")
            .arg(chunk)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}
