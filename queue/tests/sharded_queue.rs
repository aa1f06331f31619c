//! What a queue sharded over a Redis Cluster adds to the contract: jobs
//! spread over every shard, and the counts, pages and handles cover them
//! all.
mod support;

use std::{collections::BTreeSet, time::Duration};

use chat_queue::{JobHistory, JobQueue, JobState, QueueName, redis_shard_tag};

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

/// A master killed under a claim costs the claim only the shards it
/// served: the jobs the live shards delivered reach the consumer, instead
/// of waiting out their lease in a pending list nobody reads; the next
/// claim leaves the dead shards alone. An ack that names jobs of the dead
/// shard still settles the live shards' jobs, and once a replica takes
/// over, the same queue serves again.
#[tokio::test]
async fn a_dead_master_costs_a_claim_and_an_ack_only_its_own_shards() {
    if std::env::var("TEST_REDIS_URL").is_err() || !chat_faults::cluster::available() {
        eprintln!("no Redis, or no redis-server to start a cluster with: skipping");
        return;
    }
    const SHARDS: usize = 6;
    let (q, cluster) = support::cluster_queue(Duration::from_secs(30), SHARDS as u16).await;
    for i in 0..10 * SHARDS {
        q.enqueue(Q, format!("{{\"i\":{i}}}")).await.unwrap();
    }
    // Two jobs of each shard are held when the fault comes.
    let held = q.claim(Q, "b", 2 * SHARDS, Duration::ZERO).await.unwrap();
    assert_eq!(held.len(), 2 * SHARDS);
    let master = |k: usize| cluster.master_of(&redis_shard_tag(support::CLUSTER_PREFIX, k as u16));
    let victim = master(0);
    let down: BTreeSet<String> = (0..SHARDS)
        .filter(|&k| master(k) == victim)
        .map(|k| k.to_string())
        .collect();
    let live = SHARDS - down.len();
    assert!(live > 0, "every shard on one master");
    let mut cluster = cluster;
    let (cluster, replica) = tokio::task::spawn_blocking(move || {
        let replica = cluster.kill_for_good(victim);
        (cluster, replica)
    })
    .await
    .unwrap();

    let got = q
        .claim(Q, "a", 10 * SHARDS, Duration::ZERO)
        .await
        .expect("the live shards' jobs, not the dead one's error");
    let shard_of = |id: &str| id.split('.').next().unwrap().to_owned();
    assert!(
        got.iter().all(|j| !down.contains(&shard_of(&j.id))),
        "a job of a dead shard: down {down:?}, got {:?}",
        got.iter().map(|j| j.id.clone()).collect::<Vec<_>>()
    );
    assert_eq!(got.len(), 8 * live, "every other job of every live shard");
    // The dead shards sit out the next claim: it finds the live ones
    // empty, instead of waiting on the dead ones again for their error.
    let again = q.claim(Q, "a", 10, Duration::ZERO).await;
    assert!(again.expect("the live shards' answer").is_empty());

    // The held jobs, the dead shard's first, and the new ones: the live
    // shards' settle though the call fails.
    let mut all = held.clone();
    all.sort_by_key(|j| !down.contains(&shard_of(&j.id)));
    all.extend(got);
    assert!(
        q.ack(Q, &all).await.is_err(),
        "the dead shard's acks failed"
    );
    let _cluster = tokio::task::spawn_blocking(move || {
        cluster.take_over(replica);
        cluster.wait_replaced(victim, Duration::from_secs(30));
        cluster
    })
    .await
    .unwrap();
    // The same queue serves again once the replica has taken over, on the
    // connections it had. The writes the dead master had not yet passed on
    // are lost with it (nothing here waited for the replica), the dead
    // shards' consumer group sometimes among them: the counts make it again.
    let mut stats = q.stats(Q).await;
    for _ in 0..100 {
        if stats.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stats = q.stats(Q).await;
    }
    assert_eq!(
        stats.expect("the queue after the takeover").done,
        10 * live as u64,
        "the live shards' jobs all settled"
    );
}
