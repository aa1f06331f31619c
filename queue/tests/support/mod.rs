//! Helpers the queue's tests share, and the contract's scenarios that
//! take any queue.
#![allow(dead_code)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use chat_faults::cluster::{self, Cluster};
use chat_queue::{JobQueue, RedisStreamQueue, ShardedQueue};

use chat_links::db;
use chat_queue::SqliteQueue;

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

/// A fresh queue of one backend, and what it leaves behind.
pub struct Backend {
    pub name: &'static str,
    pub queue: Arc<dyn JobQueue>,
    leftover: Leftover,
}

enum Leftover {
    Dir(PathBuf),
    Keys(String),
    Cluster(Cluster),
}

impl Backend {
    pub async fn remove(self) {
        match self.leftover {
            Leftover::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Leftover::Keys(prefix) => drop_keys(&prefix).await,
            Leftover::Cluster(cluster) => drop(cluster),
        }
    }
}

/// A fresh queue with `lease` on every backend this run can reach: SQLite
/// always, Redis when `TEST_REDIS_URL` is set, and a three-shard queue on a
/// private Redis Cluster when `redis-server` can start one too.
pub async fn each_backend(lease: Duration) -> Vec<Backend> {
    each_backend_sharded(lease, CONTRACT_SHARDS).await
}

/// [`each_backend`], the cluster's queue having `shards` shards.
pub async fn each_backend_sharded(lease: Duration, shards: u16) -> Vec<Backend> {
    let (q, dir) = sqlite_queue(lease).await;
    let mut out = vec![Backend {
        name: "sqlite",
        queue: q,
        leftover: Leftover::Dir(dir),
    }];
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) => {
            let prefix = format!("tc{}:", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            out.push(Backend {
                name: "redis",
                queue: RedisStreamQueue::connect(&url, &prefix, lease)
                    .await
                    .unwrap(),
                leftover: Leftover::Keys(prefix),
            });
        }
        Err(_) => eprintln!("TEST_REDIS_URL unset: the contract runs on SQLite only"),
    }
    if std::env::var("TEST_REDIS_URL").is_ok() && cluster::available() {
        out.push(on_cluster(lease, shards).await);
    }
    out
}

/// Shards of the queue the contract runs on a cluster: jobs spread over
/// them, so claims, settles and repairs cross shards.
pub const CONTRACT_SHARDS: u16 = 3;

/// A queue of `shards` shards on a private Redis Cluster of its own.
pub async fn on_cluster(lease: Duration, shards: u16) -> Backend {
    let (queue, cluster) = cluster_queue(lease, shards).await;
    Backend {
        name: "redis-cluster",
        queue,
        leftover: Leftover::Cluster(cluster),
    }
}

/// The keys' prefix of the queue [`cluster_queue`] opens.
pub const CLUSTER_PREFIX: &str = "tc:";

/// A queue of `shards` shards on a private Redis Cluster, and the cluster,
/// for a test that faults it.
pub async fn cluster_queue(
    lease: Duration,
    shards: u16,
) -> (Arc<ShardedQueue<RedisStreamQueue>>, Cluster) {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    (sharded_on(&cluster, lease, shards).await, cluster)
}

/// A queue of `shards` shards on `cluster`, on connections of its own.
pub async fn sharded_on(
    cluster: &Cluster,
    lease: Duration,
    shards: u16,
) -> Arc<ShardedQueue<RedisStreamQueue>> {
    let first = RedisStreamQueue::connect(&cluster.url(), CLUSTER_PREFIX, lease)
        .await
        .unwrap();
    ShardedQueue::new(
        shards,
        Box::new(move |k| match k {
            0 => first.clone(),
            k => first.sibling(k),
        }),
    )
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
pub async fn trace_context_rides_with_the_job(q: &dyn chat_queue::JobQueue) {
    use chat_queue::QueueName;
    const Q: QueueName = QueueName::Index;
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let before = chat_links::now_millis();
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
        traced.ready_at >= before - 1 && traced.ready_at <= chat_links::now_millis(),
        "ready_at {} is the enqueue time (≥ {before})",
        traced.ready_at
    );
    q.ack(Q, std::slice::from_ref(untraced)).await.unwrap();

    // The delay starts somewhere within the call: before it returns, not
    // after (a loaded machine can take milliseconds to answer).
    let due = chat_links::now_millis() + 50;
    q.retry(Q, traced, "first", Duration::from_millis(50))
        .await
        .unwrap();
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
    assert!(again[0].ready_at >= due - 1, "ready again when due");
    assert_eq!(
        again[0].enqueued_at, traced.enqueued_at,
        "the first enqueue time is kept through the retry"
    );

    q.bury(Q, &again[0], "second").await.unwrap();
    let dead = q.dead_jobs(Q, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].trace.as_deref(),
        Some(trace),
        "kept in the dead record"
    );
    assert_eq!(dead[0].enqueued_at, Some(traced.enqueued_at));
}

/// A buried job can be read by its handle, revived once (keeping its
/// history and trace, with a fresh attempt budget), and a discarded one
/// is gone; acting twice, or on an unknown handle, does nothing.
pub async fn dead_jobs_can_be_revived_or_discarded(q: &dyn chat_queue::JobQueue) {
    use chat_queue::{JobState, QueueName};
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

    let handle = q.revive(Q, &first.id).await.unwrap().expect("revived");
    let pending = q
        .job(Q, JobState::Pending, &handle)
        .await
        .unwrap()
        .expect("pending under the handle revive gave");
    assert_eq!(pending.payload, first.payload);
    assert!(
        q.revive(Q, &first.id).await.unwrap().is_none(),
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
    let first_claim = jobs.iter().find(|j| j.payload == "{\"n\":1}").unwrap();
    assert_eq!(
        back[0].enqueued_at, first_claim.enqueued_at,
        "a revived job keeps its first enqueue time"
    );
    q.ack(Q, &back).await.unwrap();
}

/// Jobs are listed by state, newest first and a page at a time, read back
/// by their handles, and found by job id, payload key, error and trace.
pub async fn jobs_are_listed_by_state_and_found(q: &dyn chat_queue::JobQueue) {
    use chat_queue::{JobSearch, JobState, QueueName, Resource, Retention};
    const Q: QueueName = QueueName::Messages;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let job = |n: i64| {
        format!("{{\"application_id\":7,\"chat_number\":2,\"number\":{n},\"body\":\"b{n}\"}}")
    };
    for n in 1..=5 {
        let trace = (n == 3).then(|| format!("00-{trace_id}-00f067aa0ba902b7-01"));
        q.enqueue_traced(Q, job(n), trace).await.unwrap();
    }
    let wait = Duration::from_millis(200);
    let first = q.claim(Q, "w1", 2, wait).await.unwrap();
    assert_eq!(first.len(), 2);
    q.ack(Q, &first[..1]).await.unwrap();
    q.retry(Q, &first[1], "boom-2", Duration::from_secs(60))
        .await
        .unwrap();
    let third = q.claim(Q, "w1", 1, wait).await.unwrap();
    q.bury(Q, &third[0], "fatal-3").await.unwrap();
    let fourth = q.claim(Q, "w2", 1, wait).await.unwrap();
    assert!(fourth[0].payload.contains("\"number\":4,"));
    for n in 6..=10 {
        q.enqueue(Q, job(n)).await.unwrap();
    }

    let numbers = |jobs: &[chat_queue::JobRecord]| -> Vec<i64> {
        jobs.iter()
            .map(|j| {
                let v: serde_json::Value = serde_json::from_str(&j.payload).unwrap();
                v["number"].as_i64().unwrap()
            })
            .collect()
    };
    // Pending, two pages of four then two, newest first.
    let page1 = q.jobs(Q, JobState::Pending, None, 4).await.unwrap();
    assert_eq!(numbers(&page1.jobs), [10, 9, 8, 7]);
    let next = page1.next.expect("a second page");
    let page2 = q.jobs(Q, JobState::Pending, Some(&next), 4).await.unwrap();
    assert_eq!(numbers(&page2.jobs), [6, 5]);
    assert_eq!(page2.next, None);
    for (state, n) in [
        (JobState::InFlight, 4),
        (JobState::Retrying, 2),
        (JobState::Done, 1),
        (JobState::Dead, 3),
    ] {
        let page = q.jobs(Q, state, None, 10).await.unwrap();
        assert_eq!(numbers(&page.jobs), [n], "{state:?}");
        let listed = &page.jobs[0];
        assert_eq!(listed.state, state);
        let again = q
            .job(Q, state, &listed.id)
            .await
            .unwrap()
            .expect("found by handle");
        assert_eq!(
            (again.job_id.as_str(), again.state),
            (listed.job_id.as_str(), state)
        );
    }
    let in_flight = &q.jobs(Q, JobState::InFlight, None, 1).await.unwrap().jobs[0];
    assert_eq!(in_flight.worker.as_deref(), Some("w2"));
    let retrying = &q.jobs(Q, JobState::Retrying, None, 1).await.unwrap().jobs[0];
    assert_eq!(retrying.failures[0].error, "boom-2");
    assert!(
        retrying.at > chat_links::now_millis() + 50_000,
        "due in a minute"
    );
    assert!(in_flight.started_at.is_some_and(|s| s >= in_flight.at));
    assert_eq!(retrying.failures[0].worker.as_deref(), Some("w1"));
    assert!(retrying.failures[0].ms.is_some(), "each attempt's duration");
    // Who ran each job and when it was enqueued outlive its settling.
    let done = &q.jobs(Q, JobState::Done, None, 1).await.unwrap().jobs[0];
    assert_eq!(done.worker.as_deref(), Some("w1"));
    let started = done.started_at.expect("when its run started");
    let ready = done.ready_at.expect("when it became ready");
    assert!(ready <= started, "ready {ready}, started {started}");
    assert!(started <= done.at, "started {started}, done {}", done.at);
    let dead = &q.jobs(Q, JobState::Dead, None, 1).await.unwrap().jobs[0];
    assert_eq!(dead.worker.as_deref(), Some("w1"));
    for job in [in_flight, retrying, done, dead] {
        let enqueued = job.enqueued_at.expect("the enqueue time");
        assert!(
            enqueued > 0 && enqueued <= chat_links::now_millis(),
            "{job:?}"
        );
    }

    let found = |s: JobSearch| async move { numbers(&q.search(Q, &s, 1_000, 100).await.unwrap()) };
    let key = |chat, message| {
        Some(Resource {
            application_id: 7,
            chat,
            message,
        })
    };
    assert_eq!(
        found(JobSearch {
            names: key(Some(2), Some(3)),
            ..Default::default()
        })
        .await,
        [3]
    );
    assert_eq!(
        found(JobSearch {
            error: Some("boom".into()),
            ..Default::default()
        })
        .await,
        [2]
    );
    assert_eq!(
        found(JobSearch {
            trace: Some(trace_id.into()),
            ..Default::default()
        })
        .await,
        [3]
    );
    assert_eq!(
        found(JobSearch {
            job_id: Some(in_flight.job_id.clone()),
            ..Default::default()
        })
        .await,
        [4]
    );
    assert!(
        found(JobSearch {
            names: Some(Resource {
                application_id: 8,
                chat: None,
                message: None,
            }),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    // A bounded search looks at no more than it was allowed to.
    let scan_one = q
        .search(
            Q,
            &JobSearch {
                names: key(Some(2), Some(5)),
                ..Default::default()
            },
            1,
            100,
        )
        .await
        .unwrap();
    assert!(
        scan_one.is_empty(),
        "job 5 is not among the newest pending record"
    );

    let stats = q.stats(Q).await.unwrap();
    assert_eq!(
        (
            stats.ready,
            stats.in_flight,
            stats.retrying,
            stats.done,
            stats.dead
        ),
        (6, 1, 1, 1, 1)
    );
    let zero = Retention {
        done: Duration::ZERO,
        dead: Duration::ZERO,
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    q.trim(Q, zero).await.unwrap();
    let stats = q.stats(Q).await.unwrap();
    assert_eq!(
        (stats.done, stats.dead),
        (0, 1),
        "trimmed done records leave the counts; a dead message job stays"
    );
}

/// A job handed back because its backend was down comes back unchanged:
/// same attempt, no failure recorded, and claimable once its delay passed.
pub async fn a_deferred_job_spends_no_attempt(q: &dyn chat_queue::JobQueue) {
    use chat_queue::QueueName;
    const Q: QueueName = QueueName::Messages;
    q.enqueue(Q, "{\"deferred\":1}".into()).await.unwrap();
    let wait = Duration::from_millis(100);
    let jobs = q.claim(Q, "a", 10, wait).await.unwrap();
    assert_eq!(jobs.len(), 1);
    q.defer(Q, &jobs, Duration::from_millis(300)).await.unwrap();
    assert!(
        q.claim(Q, "a", 10, wait).await.unwrap().is_empty(),
        "not claimable before its delay"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut again = Vec::new();
    for _ in 0..20 {
        again = q.claim(Q, "b", 10, wait).await.unwrap();
        if !again.is_empty() {
            break;
        }
    }
    assert_eq!(again.len(), 1, "claimable once its delay passed");
    assert_eq!(again[0].payload, "{\"deferred\":1}");
    assert_eq!(again[0].attempt, 1, "a hand-back spends no attempt");
    assert!(again[0].failures.is_empty(), "and records no failure");
    q.ack(Q, &again).await.unwrap();
}

/// A renewed lease keeps a job from being taken over, and renewing a job
/// another consumer holds leaves it with that consumer.
pub async fn a_renewed_job_is_not_taken_over(q: &dyn chat_queue::JobQueue, lease: Duration) {
    use chat_queue::QueueName;
    const Q: QueueName = QueueName::Chats;
    q.enqueue(Q, "{\"held\":1}".into()).await.unwrap();
    let wait = Duration::from_millis(50);
    let held = q.claim(Q, "holder", 10, wait).await.unwrap();
    assert_eq!(held.len(), 1);
    let ids = vec![held[0].id.clone()];
    let until = std::time::Instant::now() + lease * 3;
    while std::time::Instant::now() < until {
        assert_eq!(q.renew(Q, "holder", &ids).await.unwrap(), 1);
        let taken = q.claim(Q, "thief", 10, wait).await.unwrap();
        assert!(taken.is_empty(), "a renewed job was taken over");
        tokio::time::sleep(lease / 4).await;
    }
    // Left alone, the lease lapses and another consumer takes it over.
    tokio::time::sleep(lease + lease / 2).await;
    let mut taken = Vec::new();
    for _ in 0..20 {
        taken = q.claim(Q, "thief", 10, wait).await.unwrap();
        if !taken.is_empty() {
            break;
        }
    }
    assert_eq!(taken.len(), 1, "an unrenewed lease lapses");
    assert_eq!(taken[0].attempt, 2, "a takeover counts as an attempt");
    assert_eq!(
        q.renew(Q, "holder", &ids).await.unwrap(),
        0,
        "the old holder cannot renew a job taken from it"
    );
    q.ack(Q, &taken).await.unwrap();
}

/// Handles no job has, in both backends' shapes and neither.
const UNKNOWN_HANDLES: [&str; 8] = [
    "",
    "x",
    "12345",
    "12345-0",
    "1-x",
    "12345:12345-0",
    ":",
    "99999999999999999999-1",
];

/// A job waiting out its backoff can be made due at once: the next claim
/// takes it, with the attempt and failures it had. A pending, done or
/// unknown job, or one already made due, answers `false`.
pub async fn a_retrying_job_can_be_made_due_at_once(q: &dyn chat_queue::JobQueue) {
    use chat_queue::{JobState, QueueName};
    const Q: QueueName = QueueName::Messages;
    q.enqueue(Q, "{\"n\":1}".into()).await.unwrap();
    q.enqueue(Q, "{\"n\":2}".into()).await.unwrap();
    let wait = Duration::from_millis(200);
    let first = q.claim(Q, "w", 1, wait).await.unwrap();
    assert_eq!(first[0].payload, "{\"n\":1}");
    q.retry(Q, &first[0], "flaky", Duration::from_secs(3600))
        .await
        .unwrap();
    let retrying = q.jobs(Q, JobState::Retrying, None, 10).await.unwrap().jobs;
    let pending = q.jobs(Q, JobState::Pending, None, 10).await.unwrap().jobs;
    assert_eq!((retrying.len(), pending.len()), (1, 1));

    assert!(
        !q.retry_now(Q, &pending[0].id).await.unwrap(),
        "a pending job has no backoff to cut"
    );
    for id in UNKNOWN_HANDLES {
        assert!(!q.retry_now(Q, id).await.unwrap(), "{id:?}");
    }
    assert!(q.retry_now(Q, &retrying[0].id).await.unwrap());
    assert!(
        !q.retry_now(Q, &retrying[0].id).await.unwrap(),
        "a second click does nothing"
    );
    let stats = q.stats(Q).await.unwrap();
    assert_eq!((stats.ready, stats.retrying), (2, 0));
    assert!(
        q.jobs(Q, JobState::Retrying, None, 10)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );

    // Well within the hour of backoff, and before a backend's periodic
    // look for due retries comes round again.
    let again = q.claim(Q, "w", 10, wait).await.unwrap();
    let made_due = again
        .iter()
        .find(|j| j.payload == "{\"n\":1}")
        .expect("claimable at once");
    assert_eq!(made_due.attempt, 2, "the attempt it was due to run as");
    assert_eq!(made_due.failures.len(), 1, "its failures are kept");
    assert_eq!(made_due.failures[0].error, "flaky");
    assert_eq!(made_due.enqueued_at, first[0].enqueued_at);
    assert!(!q.retry_now(Q, &retrying[0].id).await.unwrap(), "in flight");
    q.ack(Q, &again).await.unwrap();
    let stats = q.stats(Q).await.unwrap();
    assert_eq!(
        (stats.ready, stats.in_flight, stats.retrying, stats.done),
        (0, 0, 0, 2)
    );
    for done in q.jobs(Q, JobState::Done, None, 10).await.unwrap().jobs {
        assert!(!q.retry_now(Q, &done.id).await.unwrap(), "a done job");
    }
}

/// A pending or retrying job can be cancelled, once, and leaves no trace
/// in the lists or the counts. A job a worker claimed after the operator
/// saw it pending is in flight: it is not cancelled, and acks normally.
pub async fn waiting_jobs_can_be_cancelled_but_claimed_ones_cannot(q: &dyn chat_queue::JobQueue) {
    use chat_queue::{JobState, QueueName};
    const Q: QueueName = QueueName::Chats;
    for n in 1..=3 {
        q.enqueue(Q, format!("{{\"n\":{n}}}")).await.unwrap();
    }
    let wait = Duration::from_millis(200);
    let first = q.claim(Q, "w", 1, wait).await.unwrap();
    q.retry(Q, &first[0], "flaky", Duration::from_secs(3600))
        .await
        .unwrap();
    // The operator's page load.
    let pending = q.jobs(Q, JobState::Pending, None, 10).await.unwrap().jobs;
    let retrying = q.jobs(Q, JobState::Retrying, None, 10).await.unwrap().jobs;
    let seen = |n: u8| {
        let payload = format!("{{\"n\":{n}}}");
        pending
            .iter()
            .chain(&retrying)
            .find(|j| j.payload == payload)
            .unwrap()
            .clone()
    };
    let (one, two, three) = (seen(1), seen(2), seen(3));
    assert_eq!(
        (one.state, two.state, three.state),
        (JobState::Retrying, JobState::Pending, JobState::Pending)
    );

    // A worker claims job 2 before the operator acts on it.
    let held = q.claim(Q, "w", 1, wait).await.unwrap();
    assert_eq!(held[0].payload, two.payload);
    let in_flight = q.jobs(Q, JobState::InFlight, None, 10).await.unwrap().jobs;
    for state in JobState::ALL {
        for id in [&two.id, &in_flight[0].id] {
            assert!(
                !q.cancel(Q, state, id).await.unwrap(),
                "an in-flight job is left alone ({state:?} {id})"
            );
        }
    }

    let counts = || async move {
        let s = q.stats(Q).await.unwrap();
        (s.ready, s.in_flight, s.retrying, s.done, s.dead)
    };
    assert_eq!(counts().await, (1, 1, 1, 0, 0));
    assert!(
        !q.cancel(Q, JobState::Retrying, &three.id).await.unwrap(),
        "not in the state the operator names"
    );
    assert!(!q.cancel(Q, JobState::Pending, &one.id).await.unwrap());
    assert!(q.cancel(Q, JobState::Pending, &three.id).await.unwrap());
    assert!(
        !q.cancel(Q, JobState::Pending, &three.id).await.unwrap(),
        "a second click does nothing"
    );
    assert_eq!(counts().await, (0, 1, 1, 0, 0));
    assert!(q.cancel(Q, JobState::Retrying, &one.id).await.unwrap());
    assert!(!q.cancel(Q, JobState::Retrying, &one.id).await.unwrap());
    assert!(!q.retry_now(Q, &one.id).await.unwrap(), "cancelled");
    assert_eq!(counts().await, (0, 1, 0, 0, 0));
    for state in [JobState::Pending, JobState::Retrying] {
        assert!(q.jobs(Q, state, None, 10).await.unwrap().jobs.is_empty());
        for id in UNKNOWN_HANDLES {
            assert!(!q.cancel(Q, state, id).await.unwrap(), "{state:?} {id:?}");
        }
    }
    assert!(
        q.job(Q, JobState::Pending, &three.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        q.job(Q, JobState::Retrying, &one.id)
            .await
            .unwrap()
            .is_none()
    );

    q.ack(Q, &held).await.unwrap();
    assert_eq!(counts().await, (0, 0, 0, 1, 0));
    let done = q.jobs(Q, JobState::Done, None, 10).await.unwrap().jobs;
    assert_eq!(done[0].payload, two.payload);
    assert!(
        q.claim(Q, "w", 10, wait).await.unwrap().is_empty(),
        "nothing cancelled comes back"
    );
}
