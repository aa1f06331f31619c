//! Job-record housekeeping on both queues: settled jobs are kept as
//! history, trimmed after their retention, and bounded under steady load;
//! dead jobs that hold accepted writes are never trimmed.
//! One contract, run against the SQLite queue and (with `TEST_REDIS_URL`)
//! the Redis Streams queue.
mod support;

use chat_queue::JobHistory;
use std::{sync::Arc, time::Duration};

use chat_queue::{JobQueue, QueueName, RedisStreamQueue, Retention};

/// Index jobs hold no accepted write, so their dead records have a
/// retention too; see `accepted_writes_stay_dead` for the other queues.
const Q: QueueName = QueueName::Index;
const KEEP: Duration = Duration::from_secs(3600);
const KEEP_ALL: Retention = Retention {
    done: KEEP,
    dead: KEEP,
};

async fn sqlite_queue(done_cap: u64) -> (Arc<dyn JobQueue>, std::path::PathBuf) {
    let (q, dir) = support::sqlite_queue(Duration::from_secs(30)).await;
    (q.with_done_cap(done_cap), dir)
}

async fn redis_queue(done_cap: usize) -> Option<(Arc<RedisStreamQueue>, String)> {
    let url = std::env::var("TEST_REDIS_URL").ok()?;
    let prefix = format!("hk{}:", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let q = RedisStreamQueue::connect(&url, &prefix, Duration::from_secs(30))
        .await
        .unwrap()
        .with_done_cap(done_cap);
    Some((q, prefix))
}

/// Runs `n` jobs through: enqueue, claim, then ack all but `dead` of them
/// and bury the rest.
async fn settle(q: &dyn JobQueue, n: usize, dead: usize, body: &str) {
    for i in 0..n {
        q.enqueue(Q, format!("{{\"i\":{i},\"b\":\"{body}\"}}"))
            .await
            .unwrap();
    }
    let mut claimed = Vec::new();
    while claimed.len() < n {
        let got = q
            .claim(Q, "hk", n - claimed.len(), Duration::from_millis(50))
            .await
            .unwrap();
        assert!(
            !got.is_empty(),
            "jobs went missing before they were claimed"
        );
        claimed.extend(got);
    }
    let (buried, acked) = claimed.split_at(dead);
    for job in buried {
        q.bury(Q, job, "gave up").await.unwrap();
    }
    q.ack(Q, acked).await.unwrap();
}

/// Done and dead records stay until their own retention passes, then go.
async fn retention_contract(q: &dyn JobQueue) {
    settle(q, 20, 5, "x").await;
    let stats = q.stats(Q).await.unwrap();
    assert_eq!((stats.done, stats.dead, stats.ready), (15, 5, 0));

    let kept = q.trim(Q, KEEP_ALL).await.unwrap();
    assert_eq!(
        (kept.done, kept.dead),
        (0, 0),
        "nothing is past retention yet"
    );

    tokio::time::sleep(Duration::from_millis(60)).await;
    let short = Duration::from_millis(20);
    let trimmed = q
        .trim(
            Q,
            Retention {
                done: short,
                dead: KEEP,
            },
        )
        .await
        .unwrap();
    assert_eq!((trimmed.done, trimmed.dead), (15, 0));
    let stats = q.stats(Q).await.unwrap();
    assert_eq!(
        (stats.done, stats.dead),
        (0, 5),
        "dead jobs outlive done ones"
    );
    assert_eq!(q.dead_jobs(Q, 10).await.unwrap().len(), 5);

    let trimmed = q
        .trim(
            Q,
            Retention {
                done: short,
                dead: short,
            },
        )
        .await
        .unwrap();
    assert_eq!(trimmed.dead, 5);
    let stats = q.stats(Q).await.unwrap();
    assert_eq!((stats.done, stats.dead), (0, 0));
    assert!(q.dead_jobs(Q, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_done_and_dead_records_go_after_their_retention() {
    let (q, dir) = sqlite_queue(10_000).await;
    retention_contract(q.as_ref()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn redis_done_and_dead_records_go_after_their_retention() {
    let Some((q, prefix)) = redis_queue(10_000).await else {
        eprintln!("TEST_REDIS_URL unset: skipped");
        return;
    };
    retention_contract(q.as_ref()).await;
    support::drop_keys(&prefix).await;
}

#[tokio::test]
async fn sqlite_done_records_beyond_the_cap_are_trimmed() {
    let (q, dir) = sqlite_queue(10).await;
    settle(q.as_ref(), 30, 0, "x").await;
    assert_eq!(q.stats(Q).await.unwrap().done, 30);
    let trimmed = q.trim(Q, KEEP_ALL).await.unwrap();
    assert_eq!(trimmed.done, 20);
    assert_eq!(q.stats(Q).await.unwrap().done, 10);
    let _ = std::fs::remove_dir_all(dir);
}

/// A job's payload lives in a table of its own (migration m0011): a trim
/// and an operator's discard take it along, so no payload outlives its job,
/// and the jobs that stay still read theirs back whole.
#[tokio::test]
async fn sqlite_payloads_go_with_their_jobs() {
    let (q, dir) = sqlite_queue(10).await;
    settle(q.as_ref(), 30, 4, "x").await;
    let dead = q.dead_jobs(Q, 10).await.unwrap();
    assert!(q.discard(Q, &dead[0].id).await.unwrap());
    tokio::time::sleep(Duration::from_millis(30)).await;
    let short = Retention {
        done: KEEP,
        dead: Duration::from_millis(10),
    };
    let trimmed = q.trim(Q, short).await.unwrap();
    assert_eq!((trimmed.done, trimmed.dead), (16, 3));

    let db = chat_links::db::connect(&chat_links::db::default_sqlite_url(&dir))
        .await
        .unwrap();
    let count = async |table: &str| {
        use sea_orm::ConnectionTrait;
        let sql = format!("SELECT COUNT(*) AS n FROM {table}");
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                sql,
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap()
    };
    assert_eq!(count("queue_jobs").await, 10);
    assert_eq!(
        count("queue_payloads").await,
        10,
        "payloads outlived their jobs"
    );
    let page = q
        .jobs(Q, chat_queue::JobState::Done, None, 20)
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 10);
    for job in page.jobs {
        let value: serde_json::Value = serde_json::from_str(&job.payload).unwrap();
        assert_eq!(value["b"], "x", "payload of job {}", job.id);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Under a steady load with housekeeping running, the queue's keys stay
/// the same few, and the history stays near its cap; once the load stops
/// and the retention passes, the history is empty.
#[tokio::test]
async fn redis_job_keys_stay_bounded_under_steady_load() {
    const CAP: usize = 200;
    let Some((q, prefix)) = redis_queue(CAP).await else {
        eprintln!("TEST_REDIS_URL unset: skipped");
        return;
    };
    let client = redis::Client::open(std::env::var("TEST_REDIS_URL").unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let retention = Retention {
        done: Duration::from_millis(300),
        dead: Duration::from_millis(300),
    };
    let body = "y".repeat(6000);
    let mut key_counts = Vec::new();
    let mut max_done = 0;
    let mut max_dead = 0;
    for _ in 0..40 {
        settle(q.as_ref(), 60, 3, &body).await;
        q.trim(Q, retention).await.unwrap();
        // Rounds spread over several retentions, so trimming by age is
        // what bounds the dead history.
        tokio::time::sleep(Duration::from_millis(25)).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        key_counts.push(keys.len());
        let stats = q.stats(Q).await.unwrap();
        max_done = max_done.max(stats.done);
        max_dead = max_dead.max(stats.dead);
    }
    println!("keys per round: {key_counts:?}; most done {max_done}, most dead {max_dead}");
    // stream, done and dead (the retry set exists only while it has members).
    assert!(key_counts.iter().all(|&k| k <= 4), "{key_counts:?}");
    // `MAXLEN ~` trims whole nodes of up to 100 entries.
    assert!(
        max_done <= (CAP + 100) as u64,
        "done history grew to {max_done}"
    );
    assert!(
        max_done >= CAP as u64 / 2,
        "the cap, not the load, should bound it"
    );
    assert!(max_dead < 60, "dead history grew to {max_dead}");

    // A done record keeps at most DONE_PAYLOAD_MAX bytes of payload.
    let newest: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(format!("{prefix}{{q:{}}}:done", Q.as_str()))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let payload: String = newest.ids[0].get("p").unwrap();
    assert_eq!(
        payload.len(),
        chat_queue::DONE_PAYLOAD_MAX,
        "payload cut to the cap"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    q.trim(Q, retention).await.unwrap();
    let stats = q.stats(Q).await.unwrap();
    assert_eq!((stats.done, stats.dead), (0, 0));
    support::drop_keys(&prefix).await;
}

#[tokio::test]
async fn sqlite_history_stays_bounded_under_steady_load() {
    const CAP: u64 = 200;
    let (q, dir) = sqlite_queue(CAP).await;
    let retention = Retention {
        done: Duration::from_secs(3600),
        dead: Duration::from_millis(300),
    };
    let mut max_done = 0;
    for _ in 0..20 {
        settle(q.as_ref(), 60, 3, "z").await;
        q.trim(Q, retention).await.unwrap();
        let stats = q.stats(Q).await.unwrap();
        assert!(stats.done <= CAP, "done history grew to {}", stats.done);
        max_done = max_done.max(stats.done);
    }
    assert_eq!(max_done, CAP);
    let _ = std::fs::remove_dir_all(dir);
}

/// A dead chat or message job holds a write a client was told was
/// accepted: no retention removes it, only an operator's discard.
async fn accepted_writes_stay_dead(q: &dyn JobQueue) {
    let queue = QueueName::Messages;
    for i in 0..4 {
        q.enqueue(queue, format!("{{\"i\":{i}}}")).await.unwrap();
    }
    let claimed = q
        .claim(queue, "hk", 10, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 4);
    for job in &claimed {
        q.bury(queue, job, "bad row").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let none = Retention {
        done: Duration::ZERO,
        dead: Duration::ZERO,
    };
    let trimmed = q.trim(queue, none).await.unwrap();
    assert_eq!(trimmed.dead, 0, "no dead message job is trimmed");
    let dead = q.dead_jobs(queue, 10).await.unwrap();
    assert_eq!(dead.len(), 4);
    assert!(q.discard(queue, &dead[0].id).await.unwrap());
    assert_eq!(
        q.stats(queue).await.unwrap().dead,
        3,
        "an operator's discard removes one"
    );
}

#[tokio::test]
async fn sqlite_dead_jobs_holding_accepted_writes_are_never_trimmed() {
    let (q, dir) = sqlite_queue(10_000).await;
    accepted_writes_stay_dead(q.as_ref()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn redis_dead_jobs_holding_accepted_writes_are_never_trimmed() {
    let Some((q, prefix)) = redis_queue(10_000).await else {
        eprintln!("TEST_REDIS_URL unset: skipped");
        return;
    };
    accepted_writes_stay_dead(q.as_ref()).await;
    support::drop_keys(&prefix).await;
}
