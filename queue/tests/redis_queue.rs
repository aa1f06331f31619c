//! The Redis Streams queue against each apalis-redis 1.0.0 defect's
//! trigger (see ../shared/notes/apalis-1.0.md §9): each test builds the
//! situation that broke apalis-redis and shows this queue carries on.
//! What every backend must do is in `contract.rs`; this file keeps what
//! only a Redis deployment can get wrong.
//!
//! Runs against `TEST_REDIS_URL`; skipped (with a message) when unset.
mod support;

use chat_queue::JobHistory;
use std::{sync::Arc, time::Duration};

use chat_queue::{Claimed, JobQueue, QueueName, RedisStreamQueue};

const Q: QueueName = QueueName::Messages;

async fn queue(claim_idle: Duration) -> Option<(Arc<RedisStreamQueue>, String)> {
    let Ok(url) = std::env::var("TEST_REDIS_URL") else {
        eprintln!("TEST_REDIS_URL unset: skipping Redis queue test");
        return None;
    };
    let prefix = format!("tq{}:", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let q = RedisStreamQueue::connect(&url, &prefix, claim_idle)
        .await
        .unwrap();
    Some((q, prefix))
}

async fn raw(prefix: &str) -> redis::aio::MultiplexedConnection {
    let _ = prefix;
    redis::Client::open(std::env::var("TEST_REDIS_URL").unwrap())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Backlog poison: apalis-redis unpacked every due id in one Lua call and
/// died past ~8,000. Here 20,000 queued jobs plus 10,000 due retries drain
/// in bounded claims.
#[tokio::test]
async fn a_large_backlog_and_a_burst_of_due_retries_drain_fully() {
    let Some((q, prefix)) = queue(Duration::from_secs(30)).await else {
        return;
    };
    let mut conn = raw(&prefix).await;
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.cmd("XADD")
            .arg(format!("{prefix}{{q:messages}}:stream"))
            .arg("*")
            .arg("p")
            .arg(format!("{{\"n\":{i}}}"))
            .arg("a")
            .arg(1)
            .arg("f")
            .arg("[]")
            .ignore();
    }
    for i in 0..10_000 {
        let member = format!("{{\"p\":\"{{}}\",\"a\":\"2\",\"f\":\"[]\",\"u\":\"r{i}\"}}");
        pipe.cmd("ZADD")
            .arg(format!("{prefix}{{q:messages}}:retry"))
            .arg(0)
            .arg(member)
            .ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();

    let mut claimed = 0;
    loop {
        let jobs = q
            .claim(Q, "drainer", 500, Duration::from_millis(50))
            .await
            .unwrap();
        if jobs.is_empty() {
            break;
        }
        claimed += jobs.len();
        q.ack(Q, &jobs).await.unwrap();
    }
    assert_eq!(claimed, 30_000);
    let stats = q.stats(Q).await.unwrap();
    assert_eq!((stats.ready, stats.in_flight, stats.retrying), (0, 0, 0));
    support::drop_keys(&prefix).await;
}

/// Stale acks: apalis-redis raised (and killed the worker) on an ack for a
/// task no longer in its inflight set. Here double acks, unknown ids and
/// acks after a takeover are no-ops, and the queue keeps working.
#[tokio::test]
async fn stale_and_duplicate_acks_are_harmless() {
    let Some((q, prefix)) = queue(Duration::from_millis(200)).await else {
        return;
    };
    q.enqueue(Q, "{}".into()).await.unwrap();
    let first = q
        .claim(Q, "a", 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Consumer b takes the job over; a's ack now comes late.
    let taken = q
        .claim(Q, "b", 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    q.ack(Q, &first[..1]).await.unwrap();
    q.ack(Q, &first[..1]).await.unwrap();
    let unknown = |id: &str| Claimed {
        id: id.to_owned(),
        payload: "{}".into(),
        attempt: 1,
        failures: Vec::new(),
        trace: None,
        ready_at: 0,
        claimed_at: 0,
        enqueued_at: 0,
        worker: "w".into(),
    };
    q.ack(Q, &[unknown("1-1"), unknown("999999999999-0")])
        .await
        .unwrap();
    q.ack(Q, &taken[..1]).await.unwrap();
    assert_eq!(
        q.stats(Q).await.unwrap().done,
        1,
        "one job, however many acks: one done record"
    );
    q.enqueue(Q, "{\"after\":true}".into()).await.unwrap();
    let next = q
        .claim(Q, "a", 10, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].payload, "{\"after\":true}");
    support::drop_keys(&prefix).await;
}

/// Unbounded key growth: acked and buried jobs leave the stream. The
/// dead-letter stream keeps every buried message job (each holds an
/// accepted write, for an operator to retry or discard).
#[tokio::test]
async fn settled_jobs_do_not_accumulate() {
    let Some((q, prefix)) = queue(Duration::from_secs(30)).await else {
        return;
    };
    let q = {
        let fresh = RedisStreamQueue::connect(
            &std::env::var("TEST_REDIS_URL").unwrap(),
            &prefix,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        drop(q);
        fresh
    };
    for i in 0..1_500 {
        q.enqueue(Q, format!("{{\"i\":{i}}}")).await.unwrap();
    }
    let mut done = 0;
    while done < 1_500 {
        let jobs = q
            .claim(Q, "w", 500, Duration::from_millis(100))
            .await
            .unwrap();
        for (k, job) in jobs.iter().enumerate() {
            if k % 2 == 0 {
                q.ack(Q, std::slice::from_ref(job)).await.unwrap();
            } else {
                q.bury(Q, job, "boom").await.unwrap();
            }
        }
        done += jobs.len();
    }
    let mut conn = raw(&prefix).await;
    let stream_len: u64 = redis::cmd("XLEN")
        .arg(format!("{prefix}{{q:messages}}:stream"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let dead_len: u64 = redis::cmd("XLEN")
        .arg(format!("{prefix}{{q:messages}}:dead"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        stream_len, 0,
        "acked and buried entries are deleted from the stream"
    );
    assert_eq!(
        dead_len, 750,
        "every dead message job is kept: each holds an accepted write"
    );
    support::drop_keys(&prefix).await;
}

/// Every worker start registers a fresh consumer name; names of processes
/// long gone that own nothing are pruned so the group does not grow.
#[tokio::test]
async fn idle_empty_consumers_are_pruned() {
    let Some((q, prefix)) = queue(Duration::from_secs(30)).await else {
        return;
    };
    drop(q);
    let q = RedisStreamQueue::connect(
        &std::env::var("TEST_REDIS_URL").unwrap(),
        &prefix,
        Duration::from_secs(30),
    )
    .await
    .unwrap()
    .with_prune_idle(Duration::from_millis(100));
    q.enqueue(Q, "{}".into()).await.unwrap();
    let held = q
        .claim(Q, "owner", 1, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    q.claim(Q, "gone-1", 1, Duration::from_millis(10))
        .await
        .unwrap();
    q.claim(Q, "gone-2", 1, Duration::from_millis(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.claim(Q, "sweeper", 1, Duration::from_millis(10))
        .await
        .unwrap();
    let mut conn = raw(&prefix).await;
    let consumers: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(format!("{prefix}{{q:messages}}:stream"))
        .arg("workers")
        .query_async(&mut conn)
        .await
        .unwrap();
    let names: Vec<String> = consumers
        .iter()
        .map(|c| match c.get("name") {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        names.contains(&"owner".to_owned()),
        "a consumer that owns a job stays: {names:?}"
    );
    assert!(
        !names.contains(&"gone-1".to_owned()) && !names.contains(&"gone-2".to_owned()),
        "{names:?}"
    );
    support::drop_keys(&prefix).await;
}

/// Over a history of several pages in the done and dead streams, every
/// kind of search finds exactly what reading the lists and testing each
/// record finds, in the same order, within the same scan and limit, with
/// error texts that JSON escapes among them.
#[tokio::test]
async fn searching_the_history_finds_what_the_lists_hold() {
    use chat_queue::{Failure, JobRecord, JobSearch, JobState, Resource};
    let Some((q, prefix)) = queue(Duration::from_secs(30)).await else {
        return;
    };
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut conn = raw(&prefix).await;
    let mut pipe = redis::pipe();
    for i in 0..1_300 {
        let state = if i % 9 == 0 { "dead" } else { "done" };
        let payload = format!(
            "{{\"application_id\":{},\"chat_number\":{},\"number\":{i},\"body\":\"b\"}}",
            1 + i % 3,
            1 + i % 7
        );
        let failures: Vec<Failure> = (i % 50 == 0)
            .then(|| Failure {
                attempt: 1,
                at: chrono::Utc::now(),
                error: format!("row \"{i}\" failed: C:\\tmp\tdisk"),
                worker: Some("w1".into()),
                ms: Some(3),
            })
            .into_iter()
            .collect();
        let cmd = pipe
            .cmd("XADD")
            .arg(format!("{prefix}{{q:messages}}:{state}"))
            .arg("*")
            .arg("id")
            .arg(format!("job-{i}"))
            .arg("p")
            .arg(payload)
            .arg("a")
            .arg(1)
            .arg("f")
            .arg(serde_json::to_string(&failures).unwrap());
        if i % 100 == 0 {
            cmd.arg("t")
                .arg(format!("00-{trace_id}-00f067aa0ba902b7-01"));
        }
        cmd.ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();

    // The reference: the newest `scan` of each state, listed, then tested.
    let listed = async |state: JobState, scan: usize| -> Vec<JobRecord> {
        let mut all = Vec::new();
        let mut cursor = None;
        while all.len() < scan {
            let page = q
                .jobs(Q, state, cursor.as_deref(), 300.min(scan - all.len()))
                .await
                .unwrap();
            all.extend(page.jobs);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        all
    };
    let names = |application_id, chat, message| {
        Some(Resource {
            application_id,
            chat,
            message,
        })
    };
    let searches = [
        JobSearch {
            names: names(2, Some(3), None),
            ..Default::default()
        },
        JobSearch {
            names: names(2, Some(1), Some(1_000)),
            ..Default::default()
        },
        JobSearch {
            error: Some("row \"100\" failed".into()),
            ..Default::default()
        },
        JobSearch {
            error: Some("C:\\tmp\td".into()),
            ..Default::default()
        },
        JobSearch {
            trace: Some(trace_id.into()),
            names: names(2, None, None),
            ..Default::default()
        },
        JobSearch {
            job_id: Some("job-777".into()),
            ..Default::default()
        },
        JobSearch {
            names: names(9, None, None),
            ..Default::default()
        },
    ];
    let mut matched = 0;
    for search in &searches {
        for (scan, limit) in [(10_000, 100), (10_000, 3), (700, 100)] {
            let mut expected = Vec::new();
            for state in [JobState::Done, JobState::Dead] {
                let wanted = limit - expected.len().min(limit);
                expected.extend(
                    listed(state, scan)
                        .await
                        .into_iter()
                        .filter(|j| search.matches(Q, j))
                        .take(wanted),
                );
            }
            let ids =
                |jobs: &[JobRecord]| jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>();
            let found = q.search(Q, search, scan, limit).await.unwrap();
            assert_eq!(
                ids(&found),
                ids(&expected),
                "{search:?} scan {scan} limit {limit}"
            );
            matched += found.len();
        }
    }
    assert!(matched > 100, "the searches found little: {matched}");
    support::drop_keys(&prefix).await;
}

/// A script that enqueues with `redis_enqueue_lua` (as the intake's accept
/// does, inside its own atomic step) writes a job the queue reads back as
/// sent, traced or not.
#[tokio::test]
async fn a_job_enqueued_from_lua_is_claimed_as_sent() {
    let Some((q, prefix)) = queue(Duration::from_secs(30)).await else {
        return;
    };
    let script = redis::Script::new(&format!(
        "{}\nenqueue_job(KEYS[1], ARGV[1], ARGV[2])\nreturn 1",
        chat_queue::redis_enqueue_lua()
    ));
    let mut conn = raw(&prefix).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for (payload, trace) in [("{\"n\":1}", traceparent), ("{\"n\":2}", "")] {
        let _: i64 = script
            .key(q.stream_key(Q))
            .arg(payload)
            .arg(trace)
            .invoke_async(&mut conn)
            .await
            .unwrap();
    }
    let jobs = q
        .claim(Q, "w", 10, Duration::from_millis(100))
        .await
        .unwrap();
    let got: Vec<_> = jobs
        .iter()
        .map(|j| (j.payload.as_str(), j.trace.as_deref(), j.attempt))
        .collect();
    assert_eq!(
        got,
        [("{\"n\":1}", Some(traceparent), 1), ("{\"n\":2}", None, 1)]
    );
    support::drop_keys(&prefix).await;
}

/// A consumer group that vanished after this process made it (its creation
/// lost in a failover, a FLUSHALL) is made again by the counts as by a
/// claim, instead of every count failing with `NOGROUP` from then on; the
/// job whose delivery went with it comes back.
#[tokio::test]
async fn a_vanished_consumer_group_is_made_again_by_the_counts() {
    let Some((q, prefix)) = queue(Duration::from_secs(30)).await else {
        return;
    };
    q.enqueue(Q, "{\"n\":1}".into()).await.unwrap();
    q.enqueue(Q, "{\"n\":2}".into()).await.unwrap();
    assert_eq!(q.claim(Q, "a", 1, Duration::ZERO).await.unwrap().len(), 1);
    let mut conn = raw(&prefix).await;
    let _: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(format!("{prefix}{{q:messages}}:stream"))
        .arg("workers")
        .query_async(&mut conn)
        .await
        .unwrap();

    let stats = q
        .stats(Q)
        .await
        .expect("the counts after the group vanished");
    assert_eq!((stats.ready, stats.in_flight), (2, 0));
    let again = q.claim(Q, "a", 10, Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), 2, "both jobs, the one delivered before too");
}
