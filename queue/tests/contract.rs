//! The queue contract, run once against every backend: SQLite always, and
//! Redis Streams when `TEST_REDIS_URL` is set, on one node and sharded over
//! a private Redis Cluster. Leases, takeover, retries,
//! burial, exact counts, and what operators do to jobs.
mod support;

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use chat_queue::{JobQueue, QueueName};

const Q: QueueName = QueueName::Messages;
const LONG_LEASE: Duration = Duration::from_secs(30);

/// Runs `scenario` on a fresh queue of each backend, naming the backend
/// first so a failure says which one broke the contract.
async fn on_each<F, Fut>(lease: Duration, scenario: F)
where
    F: Fn(Arc<dyn JobQueue>) -> Fut,
    Fut: Future<Output = ()>,
{
    on_each_sharded(lease, support::CONTRACT_SHARDS, scenario).await
}

/// [`on_each`], the cluster's queue having `shards` shards.
async fn on_each_sharded<F, Fut>(lease: Duration, shards: u16, scenario: F)
where
    F: Fn(Arc<dyn JobQueue>) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in support::each_backend_sharded(lease, shards).await {
        eprintln!("contract on {}", backend.name);
        scenario(backend.queue.clone()).await;
        backend.remove().await;
    }
}

async fn enqueue_numbered(q: &dyn JobQueue, n: usize) {
    for i in 0..n {
        q.enqueue(Q, format!("{{\"i\":{i}}}")).await.unwrap();
    }
}

/// A consumer that dies holding jobs loses them to any other consumer once
/// the lease runs out, not before; the takeover counts as an attempt, the
/// late acks of the dead owner are harmless, and its name is free again.
#[tokio::test]
async fn a_lapsed_lease_hands_the_jobs_to_another_consumer() {
    on_each(Duration::from_millis(300), |q| async move {
        enqueue_numbered(q.as_ref(), 5).await;
        let held = q
            .claim(Q, "dead-worker", 5, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(held.len(), 5);
        let early = q
            .claim(Q, "rescuer", 5, Duration::from_millis(50))
            .await
            .unwrap();
        assert!(early.is_empty(), "nobody takes a job before its lease ends");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let rescued = q
            .claim(Q, "rescuer-2", 5, Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(rescued.len(), 5);
        assert!(
            rescued.iter().all(|j| j.attempt == 2),
            "a delivery that never settled counts as an attempt"
        );
        q.ack(Q, &held).await.unwrap();
        q.ack(Q, &rescued).await.unwrap();
        q.ack(Q, &rescued).await.unwrap();
        let stats = q.stats(Q).await.unwrap();
        assert_eq!(
            (stats.ready, stats.in_flight, stats.done),
            (0, 0, 5),
            "late and repeated acks record each job once"
        );
        q.enqueue(Q, "{}".into()).await.unwrap();
        let reused = q
            .claim(Q, "dead-worker", 5, Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!(reused.len(), 1, "a dead worker's name is free at once");
    })
    .await;
}

/// A retried job comes back after its delay, not before, with its attempt
/// count and failure history; a buried one keeps its failures.
#[tokio::test]
async fn retries_wait_their_delay_and_dead_jobs_keep_their_history() {
    on_each(LONG_LEASE, |q| async move {
        enqueue_numbered(q.as_ref(), 3).await;
        let jobs = q
            .claim(Q, "w", 3, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(jobs.len(), 3);
        q.retry(Q, &jobs[0], "transient", Duration::from_millis(200))
            .await
            .unwrap();
        q.bury(Q, &jobs[1], "fatal").await.unwrap();
        assert!(
            q.claim(Q, "w", 3, Duration::from_millis(10))
                .await
                .unwrap()
                .is_empty()
        );
        // Redis promotes due retries at most about once a second.
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let again = q
            .claim(Q, "w2", 3, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].payload, jobs[0].payload);
        assert_eq!(again[0].attempt, 2);
        assert_eq!(again[0].failures[0].error, "transient");
        let dead = q.dead_jobs(Q, 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].failures[0].error, "fatal");
    })
    .await;
}

/// A claim that waits returns as soon as a job arrives, long before its
/// wait runs out.
#[tokio::test]
async fn a_waiting_consumer_wakes_on_enqueue() {
    on_each(LONG_LEASE, |q| async move {
        q.claim(Q, "idle", 1, Duration::from_millis(10))
            .await
            .unwrap();
        let producer = q.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            producer.enqueue(Q, "{}".into()).await.unwrap();
        });
        let started = Instant::now();
        let jobs = q
            .claim(Q, "idle", 1, Duration::from_secs(10))
            .await
            .unwrap();
        let waited = started.elapsed();
        assert_eq!(jobs.len(), 1);
        assert!(
            waited < Duration::from_secs(5),
            "woke only after {waited:?} of a 10 s wait"
        );
    })
    .await;
}

/// A consumer that stops cleanly hands back the jobs it claimed but never
/// ran; another consumer gets them at once, not after the lease.
#[tokio::test]
async fn a_retired_consumer_hands_back_its_unstarted_jobs() {
    on_each(Duration::from_secs(60), |q| async move {
        enqueue_numbered(q.as_ref(), 5).await;
        let leaving = q
            .claim(Q, "leaving", 5, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(leaving.len(), 5);
        assert!(
            q.claim(Q, "staying", 5, Duration::from_millis(10))
                .await
                .unwrap()
                .is_empty()
        );
        q.retire(Q, "leaving").await.unwrap();
        let taken = q
            .claim(Q, "fresh", 5, Duration::from_millis(10))
            .await
            .unwrap();
        assert!(
            taken.iter().all(|j| j.attempt == 1),
            "a clean hand-back costs no attempt"
        );
        let mut payloads: Vec<String> = taken.into_iter().map(|j| j.payload).collect();
        payloads.sort();
        assert_eq!(
            payloads,
            (0..5).map(|i| format!("{{\"i\":{i}}}")).collect::<Vec<_>>()
        );
    })
    .await;
}

/// Every state is counted exactly, for the dashboard and `/metrics`.
#[tokio::test]
async fn stats_count_every_state_exactly() {
    on_each(LONG_LEASE, |q| async move {
        enqueue_numbered(q.as_ref(), 10).await;
        let jobs = q
            .claim(Q, "w", 4, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(jobs.len(), 4);
        q.ack(Q, &jobs[..1]).await.unwrap();
        q.retry(Q, &jobs[1], "first failure", Duration::from_secs(60))
            .await
            .unwrap();
        q.bury(Q, &jobs[2], "fatal").await.unwrap();
        let s = q.stats(Q).await.unwrap();
        assert_eq!(
            (s.ready, s.in_flight, s.retrying, s.dead, s.done),
            (6, 1, 1, 1, 1)
        );
    })
    .await;
}

#[tokio::test]
async fn the_trace_context_survives_retry_and_burial() {
    on_each(LONG_LEASE, |q| async move {
        support::trace_context_rides_with_the_job(q.as_ref()).await
    })
    .await;
}

#[tokio::test]
async fn dead_jobs_can_be_revived_or_discarded() {
    on_each(LONG_LEASE, |q| async move {
        support::dead_jobs_can_be_revived_or_discarded(q.as_ref()).await
    })
    .await;
}

#[tokio::test]
async fn a_deferred_job_spends_no_attempt() {
    on_each(LONG_LEASE, |q| async move {
        support::a_deferred_job_spends_no_attempt(q.as_ref()).await
    })
    .await;
}

#[tokio::test]
async fn a_renewed_job_is_not_taken_over() {
    let lease = Duration::from_millis(400);
    on_each(lease, |q| async move {
        support::a_renewed_job_is_not_taken_over(q.as_ref(), lease).await
    })
    .await;
}

/// On one shard of the cluster: a sharded queue lists newest first within
/// each shard, one shard after another (jobs of different shards written
/// in the same millisecond have no order to merge them by).
#[tokio::test]
async fn jobs_are_listed_by_state_and_found() {
    on_each_sharded(LONG_LEASE, 1, |q| async move {
        support::jobs_are_listed_by_state_and_found(q.as_ref()).await
    })
    .await;
}

#[tokio::test]
async fn a_retrying_job_can_be_made_due_at_once() {
    on_each(LONG_LEASE, |q| async move {
        support::a_retrying_job_can_be_made_due_at_once(q.as_ref()).await
    })
    .await;
}

#[tokio::test]
async fn waiting_jobs_can_be_cancelled_but_claimed_ones_cannot() {
    on_each(LONG_LEASE, |q| async move {
        support::waiting_jobs_can_be_cancelled_but_claimed_ones_cannot(q.as_ref()).await
    })
    .await;
}
