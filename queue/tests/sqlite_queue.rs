//! The embedded queue: leases, takeover, retries, burial and exact counts.
mod support;

use chat_queue::JobHistory;
use std::time::Duration;

use chat_queue::{JobQueue, QueueName};
use support::sqlite_queue as queue;

const Q: QueueName = QueueName::Chats;

#[tokio::test]
async fn a_lapsed_lease_hands_the_job_to_another_consumer() {
    let (q, dir) = queue(Duration::from_millis(200)).await;
    q.enqueue(Q, "{}".into()).await.unwrap();
    let held = q
        .claim(Q, "a", 10, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert!(
        q.claim(Q, "b", 10, Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let taken = q
        .claim(Q, "b", 10, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(
        taken[0].attempt, 2,
        "a delivery that never settled counts as an attempt"
    );
    // The late ack of the first owner and a repeat ack are harmless.
    q.ack(Q, &held[..1]).await.unwrap();
    q.ack(Q, &taken[..1]).await.unwrap();
    let stats = q.stats(Q).await.unwrap();
    assert_eq!(
        (
            stats.ready,
            stats.in_flight,
            stats.retrying,
            stats.dead,
            stats.done
        ),
        (0, 0, 0, 0, 1)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn retries_wait_their_delay_and_dead_jobs_keep_their_history() {
    let (q, dir) = queue(Duration::from_secs(30)).await;
    for i in 0..3 {
        q.enqueue(Q, format!("{{\"i\":{i}}}")).await.unwrap();
    }
    let jobs = q.claim(Q, "w", 3, Duration::from_millis(10)).await.unwrap();
    assert_eq!(jobs.len(), 3);
    q.retry(Q, &jobs[0], "transient", Duration::from_millis(300))
        .await
        .unwrap();
    q.bury(Q, &jobs[1], "fatal").await.unwrap();
    let stats = q.stats(Q).await.unwrap();
    assert_eq!(
        (stats.ready, stats.in_flight, stats.retrying, stats.dead),
        (0, 1, 1, 1)
    );
    assert!(
        q.claim(Q, "w", 3, Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = q.claim(Q, "w", 3, Duration::from_millis(10)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].failures[0].error, "transient");
    let dead = q.dead_jobs(Q, 10).await.unwrap();
    assert_eq!(dead[0].failures[0].error, "fatal");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_waiting_consumer_wakes_on_enqueue() {
    let (q, dir) = queue(Duration::from_secs(30)).await;
    let producer = q.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        producer.enqueue(Q, "{}".into()).await.unwrap();
    });
    let started = std::time::Instant::now();
    let jobs = q.claim(Q, "w", 1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_retired_consumer_hands_back_its_unstarted_jobs() {
    let (q, dir) = queue(Duration::from_secs(60)).await;
    for i in 0..5 {
        q.enqueue(Q, format!("{{\"i\":{i}}}")).await.unwrap();
    }
    assert_eq!(
        q.claim(Q, "leaving", 5, Duration::from_millis(10))
            .await
            .unwrap()
            .len(),
        5
    );
    assert!(
        q.claim(Q, "staying", 5, Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty()
    );
    q.retire(Q, "leaving").await.unwrap();
    let taken = q
        .claim(Q, "staying", 5, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(taken.len(), 5);
    assert!(
        taken.iter().all(|j| j.attempt == 1),
        "a clean hand-back costs no attempt"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_trace_context_survives_retry_and_burial() {
    let (q, dir) = queue(Duration::from_secs(30)).await;
    support::trace_context_rides_with_the_job(q.as_ref()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn dead_jobs_can_be_revived_or_discarded() {
    let (q, dir) = queue(Duration::from_secs(30)).await;
    support::dead_jobs_can_be_revived_or_discarded(q.as_ref()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_deferred_job_spends_no_attempt() {
    let (q, dir) = queue(Duration::from_secs(30)).await;
    support::a_deferred_job_spends_no_attempt(q.as_ref()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_renewed_job_is_not_taken_over() {
    let lease = Duration::from_millis(400);
    let (q, dir) = queue(lease).await;
    support::a_renewed_job_is_not_taken_over(q.as_ref(), lease).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn jobs_are_listed_by_state_and_found() {
    let (q, dir) = queue(Duration::from_secs(30)).await;
    support::jobs_are_listed_by_state_and_found(q.as_ref()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_retrying_job_can_be_made_due_at_once() {
    let (q, dir) = queue(Duration::from_secs(30)).await;
    support::a_retrying_job_can_be_made_due_at_once(q.as_ref()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn waiting_jobs_can_be_cancelled_but_claimed_ones_cannot() {
    let (q, dir) = queue(Duration::from_secs(30)).await;
    support::waiting_jobs_can_be_cancelled_but_claimed_ones_cannot(q.as_ref()).await;
    let _ = std::fs::remove_dir_all(dir);
}
