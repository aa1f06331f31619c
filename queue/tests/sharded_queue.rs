//! What a queue sharded over a Redis Cluster adds to the contract: jobs
//! spread over every shard, and the counts, pages and handles cover them
//! all.
mod support;

use std::{collections::BTreeSet, time::Duration};

use chat_queue::{JobState, QueueName};

const Q: QueueName = QueueName::Messages;

#[tokio::test]
async fn every_shard_is_counted_listed_and_consumed() {
    if std::env::var("TEST_REDIS_URL").is_err() || !chat_faults::cluster::available() {
        eprintln!("no Redis, or no redis-server to start a cluster with: skipping");
        return;
    }
    let backend = support::on_cluster(Duration::from_secs(30), 3).await;
    let q = backend.queue.clone();
    for i in 0..30 {
        q.enqueue(Q, format!("{{\"i\":{i}}}")).await.unwrap();
    }
    assert_eq!(q.stats(Q).await.unwrap().ready, 30);

    // Pages of seven run through every shard, each job once.
    let (mut listed, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let page = q
            .jobs(Q, JobState::Pending, cursor.as_deref(), 7)
            .await
            .unwrap();
        assert!(page.jobs.len() <= 7);
        listed.extend(page.jobs);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let payloads: BTreeSet<&str> = listed.iter().map(|j| j.payload.as_str()).collect();
    assert_eq!(
        (listed.len(), payloads.len()),
        (30, 30),
        "each job listed once"
    );
    let shards: BTreeSet<&str> = listed
        .iter()
        .map(|j| j.id.split('.').next().unwrap())
        .collect();
    assert_eq!(
        shards,
        BTreeSet::from(["0", "1", "2"]),
        "jobs on every shard"
    );
    for job in &listed {
        let again = q.job(Q, JobState::Pending, &job.id).await.unwrap();
        assert_eq!(again.map(|j| j.payload), Some(job.payload.clone()));
    }

    // Two consumers drain them all; each claim takes from every shard.
    let wait = Duration::from_millis(100);
    let first = q.claim(Q, "a", 9, wait).await.unwrap();
    let spread: BTreeSet<&str> = first
        .iter()
        .map(|j| j.id.split('.').next().unwrap())
        .collect();
    assert_eq!(first.len(), 9);
    assert_eq!(
        spread.len(),
        3,
        "one claim took from each shard: {spread:?}"
    );
    let mut claimed = first;
    while claimed.len() < 30 {
        let more = q.claim(Q, "b", 10, wait).await.unwrap();
        assert!(!more.is_empty(), "{} of 30 claimed", claimed.len());
        claimed.extend(more);
    }
    assert_eq!(q.stats(Q).await.unwrap().in_flight, 30);
    q.ack(Q, &claimed).await.unwrap();
    let stats = q.stats(Q).await.unwrap();
    assert_eq!((stats.ready, stats.in_flight, stats.done), (0, 0, 30));
    assert!(q.claim(Q, "a", 10, wait).await.unwrap().is_empty());
    backend.remove().await;
}
