//! Helpers the store's queue tests share.
#![allow(dead_code)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use chat_store::{db, queue::SqliteQueue};

/// A migrated SQLite queue in a fresh directory, which the caller removes.
pub async fn sqlite_queue(lease: Duration) -> (Arc<SqliteQueue>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("chat-q-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = db::default_sqlite_url(&dir);
    let reader = db::connect(&url).await.unwrap();
    let writer = db::connect_writer(&url).await.unwrap();
    db::migrate(&writer).await.unwrap();
    (SqliteQueue::new(reader, writer, lease), dir)
}

/// Deletes every key under `prefix` in `TEST_REDIS_URL`.
pub async fn drop_keys(prefix: &str) {
    let client = redis::Client::open(std::env::var("TEST_REDIS_URL").unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// A job's trace context and ready time survive its retry and its burial,
/// and an untraced job carries none.
pub async fn trace_context_rides_with_the_job(q: &dyn chat_store::queue::JobQueue) {
    use chat_store::queue::QueueName;
    const Q: QueueName = QueueName::Index;
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let before = chat_store::now_millis();
    q.enqueue_traced(Q, "{\"traced\":1}".into(), Some(trace.into()))
        .await
        .unwrap();
    q.enqueue(Q, "{\"traced\":0}".into()).await.unwrap();
    let wait = Duration::from_millis(200);
    let jobs = q.claim(Q, "c", 10, wait).await.unwrap();
    assert_eq!(jobs.len(), 2);
    let traced = jobs.iter().find(|j| j.payload.contains(":1")).unwrap();
    let untraced = jobs.iter().find(|j| j.payload.contains(":0")).unwrap();
    assert_eq!(traced.trace.as_deref(), Some(trace));
    assert_eq!(untraced.trace, None);
    assert!(
        traced.ready_at >= before - 1 && traced.ready_at <= chat_store::now_millis(),
        "ready_at {} is the enqueue time (≥ {before})",
        traced.ready_at
    );
    q.ack(Q, std::slice::from_ref(untraced)).await.unwrap();

    q.retry(Q, traced, "first", Duration::from_millis(50))
        .await
        .unwrap();
    let due = chat_store::now_millis() + 50;
    // A backend may look for due retries only now and then.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let again = loop {
        let jobs = q.claim(Q, "c", 10, wait).await.unwrap();
        if !jobs.is_empty() || std::time::Instant::now() > deadline {
            break jobs;
        }
    };
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(
        again[0].trace.as_deref(),
        Some(trace),
        "kept through the retry"
    );
    assert!(again[0].ready_at >= due - 5, "ready again when due");

    q.bury(Q, &again[0], "second").await.unwrap();
    let dead = q.dead_jobs(Q, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].trace.as_deref(),
        Some(trace),
        "kept in the dead record"
    );
}

/// A buried job can be read by its handle, revived once (keeping its
/// history and trace, with a fresh attempt budget), and a discarded one
/// is gone; acting twice, or on an unknown handle, does nothing.
pub async fn dead_jobs_can_be_revived_or_discarded(q: &dyn chat_store::queue::JobQueue) {
    use chat_store::queue::QueueName;
    const Q: QueueName = QueueName::Chats;
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    q.enqueue_traced(Q, "{\"n\":1}".into(), Some(trace.into()))
        .await
        .unwrap();
    q.enqueue(Q, "{\"n\":2}".into()).await.unwrap();
    let wait = Duration::from_millis(200);
    let jobs = q.claim(Q, "c", 10, wait).await.unwrap();
    assert_eq!(jobs.len(), 2);
    for job in &jobs {
        q.bury(Q, job, "broken").await.unwrap();
    }
    let dead = q.dead_jobs(Q, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    let first = dead.iter().find(|d| d.payload.contains(":1")).unwrap();
    let second = dead.iter().find(|d| d.payload.contains(":2")).unwrap();
    let read = q
        .dead_job(Q, &first.id)
        .await
        .unwrap()
        .expect("by its handle");
    assert_eq!(read.payload, first.payload);
    assert!(read.buried_at > 0);
    assert!(q.dead_job(Q, "12345-0").await.unwrap().is_none());

    assert!(q.revive(Q, &first.id).await.unwrap());
    assert!(
        !q.revive(Q, &first.id).await.unwrap(),
        "a second revive does nothing"
    );
    assert!(q.discard(Q, &second.id).await.unwrap());
    assert!(!q.discard(Q, &second.id).await.unwrap());
    assert!(q.dead_jobs(Q, 10).await.unwrap().is_empty());
    assert_eq!(q.stats(Q).await.unwrap().dead, 0);

    let back = q.claim(Q, "c", 10, wait).await.unwrap();
    assert_eq!(back.len(), 1, "only the revived job is live again");
    assert_eq!(back[0].payload, "{\"n\":1}");
    assert_eq!(back[0].attempt, 1, "a fresh attempt budget");
    assert_eq!(back[0].failures.len(), 1, "its failure history is kept");
    assert_eq!(back[0].failures[0].error, "broken");
    assert_eq!(back[0].trace.as_deref(), Some(trace));
    q.ack(Q, &back).await.unwrap();
}
