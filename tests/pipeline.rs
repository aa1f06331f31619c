//! The write pipeline under stress: backlogs, crashes, poison jobs, and
//! reads before persistence.
mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chat::backends::Backends;
use chat_queue::QueueName;
use chat_store::model::MessageRow;
use common::{App, Profile, Stack, app_id, numbers, profiles, profiles_with_cluster};
use futures::future::join_all;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait};
use serde_json::{Value, json};

async fn backends(stack: &Stack) -> Backends {
    stack.backends(Duration::from_secs(15)).await
}

/// (rows, distinct numbers, max number) of one chat's persisted messages.
async fn persisted(db: &DatabaseConnection, app: i64, chat: i64) -> (i64, i64, i64) {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT COUNT(*), COUNT(DISTINCT number), COALESCE(MAX(number), 0) FROM messages \
             WHERE application_id = ? AND chat_number = ?",
            [app.into(), chat.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    (
        row.try_get_by_index::<i64>(0).unwrap(),
        row.try_get_by_index::<i64>(1).unwrap(),
        row.try_get_by_index::<i64>(2).unwrap(),
    )
}

async fn wait_persisted(
    db: &DatabaseConnection,
    app: i64,
    chat: i64,
    n: i64,
    within: Duration,
) -> (i64, i64, i64) {
    let deadline = Instant::now() + within;
    loop {
        let got = persisted(db, app, chat).await;
        if got.0 >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The dead message jobs, once there is at least one or `within` passed.
async fn wait_dead(b: &Backends, within: Duration) -> Vec<chat_queue::DeadJob> {
    let deadline = Instant::now() + within;
    loop {
        let dead = b.queue.dead_jobs(QueueName::Messages, 10).await.unwrap();
        if !dead.is_empty() || Instant::now() > deadline {
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A 20,000-job backlog, built while no worker runs, drains fully once a
/// worker starts (the trigger of apalis-redis's backlog poison).
#[tokio::test]
async fn a_twenty_thousand_job_backlog_drains_when_a_worker_starts() {
    const N: i64 = 20_000;
    for profile in profiles_with_cluster() {
        let stack = Stack::new(profile).await;
        let api = stack.spawn("api", &[]).await;
        let token = api.create_app("backlog").await;
        api.create_chat(&token).await;
        drop(api);

        let b = backends(&stack).await;
        let app = app_id(&b.db, &token).await;
        if profile == Profile::Embedded {
            // The embedded intake writes new messages' rows itself; a
            // backlog of persistence jobs there is of updates and keyed
            // creates, which one transaction of jobs stands in for.
            let now = chat_links::now();
            let jobs = (1..=N)
                .map(|n| {
                    let row = MessageRow {
                        application_id: app,
                        chat_number: 1,
                        number: n,
                        body: format!("backlog {n}"),
                        version: n,
                        created_at: now,
                        updated_at: now,
                    };
                    (serde_json::to_string(&row).unwrap(), None)
                })
                .collect();
            let txn = b.writer.begin().await.unwrap();
            chat_queue::SqliteQueue::insert_many(&txn, QueueName::Messages, jobs)
                .await
                .unwrap();
            txn.commit().await.unwrap();
        } else {
            let intake = b.intake.clone();
            let tasks = (0..16).map(|c| {
                let intake = intake.clone();
                async move {
                    for i in 0..N / 16 + i64::from(c < N % 16) {
                        intake
                            .create_message(app, 1, format!("backlog {c}/{i}"), Default::default())
                            .await
                            .unwrap();
                    }
                }
            });
            join_all(tasks).await;
        }
        let stats = b.queue.stats(QueueName::Messages).await.unwrap();
        assert!(
            stats.ready >= N as u64,
            "{profile:?}: backlog built: {stats:?}"
        );
        assert_eq!(persisted(&b.db, app, 1).await.0, 0, "no worker ran yet");

        let _worker = stack.spawn("worker", &[]).await;
        let got = wait_persisted(&b.db, app, 1, N, Duration::from_secs(180)).await;
        assert_eq!(
            got,
            (N, N, N),
            "{profile:?}: every job persisted once, numbered 1..N"
        );
        stack.cleanup().await;
    }
}

/// Posts `total` messages from 16 clients, calling `midway` once half are
/// accepted; returns number → body for every 201.
async fn post_through(
    app: &App,
    token: &str,
    total: usize,
    midway: impl FnOnce() + Send,
) -> HashMap<i64, String> {
    let accepted = Arc::new(Mutex::new(HashMap::new()));
    let midway = Mutex::new(Some(midway));
    let tasks = (0..16).map(|c| {
        let accepted = accepted.clone();
        let midway = &midway;
        async move {
            for i in 0..total / 16 {
                let body = format!("client {c} message {i} ✓");
                let r = app
                    .http
                    .post(app.url(&format!("/applications/{token}/chats/1/messages")))
                    .json(&json!({ "body": body }))
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status() == 201
                {
                    let n = r.json::<Value>().await.unwrap()["number"].as_i64().unwrap();
                    let len = {
                        let mut a = accepted.lock().unwrap();
                        a.insert(n, body);
                        a.len()
                    };
                    if len >= total / 2
                        && let Some(f) = midway.lock().unwrap().take()
                    {
                        f();
                    }
                }
            }
        }
    });
    join_all(tasks).await;
    Arc::try_unwrap(accepted).unwrap().into_inner().unwrap()
}

/// Every accepted message is persisted once with its body. `in_flight` is
/// how many requests may have committed without their 201 reaching the
/// client (the process died while answering); those may exist too.
async fn assert_exactly(
    db: &DatabaseConnection,
    app: i64,
    accepted: &HashMap<i64, String>,
    in_flight: usize,
) {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT number, body FROM messages WHERE application_id = ? AND chat_number = 1",
            [app.into()],
        ))
        .await
        .unwrap();
    let mut found = 0;
    for row in &rows {
        let n: i64 = row.try_get_by_index(0).unwrap();
        let body: String = row.try_get_by_index(1).unwrap();
        match accepted.get(&n) {
            Some(b) => {
                assert_eq!(b, &body, "message {n} has the body that was accepted");
                found += 1;
            }
            None => assert!(body.starts_with("client "), "unexpected row {n}: {body}"),
        }
    }
    assert_eq!(found, accepted.len(), "every accepted message persisted");
    assert!(
        rows.len() <= accepted.len() + in_flight,
        "{} rows for {} accepted",
        rows.len(),
        accepted.len()
    );
}

/// A worker killed with SIGKILL mid-batch loses nothing: another worker
/// takes its claimed jobs over and every accepted message lands once.
#[tokio::test]
async fn a_worker_killed_mid_batch_loses_no_accepted_message() {
    let slow_batches = [
        ("BATCH_LINGER_MS", "150"),
        ("BATCH_SIZE", "100"),
        ("CLAIM_IDLE_MS", "1500"),
    ];
    for profile in profiles_with_cluster() {
        let stack = Stack::new(profile).await;
        // On the embedded profile one process holds every role, so the
        // whole process dies; on the distributed one only the worker does.
        let (api, victim) = match profile {
            Profile::Distributed | Profile::Cluster => {
                let api = stack.spawn("api", &[]).await;
                (api, stack.spawn("worker", &slow_batches).await)
            }
            Profile::Embedded => {
                let serve = stack.spawn("serve", &slow_batches).await;
                (serve.clone(), serve)
            }
        };
        let token = api.create_app("crash").await;
        api.create_chat(&token).await;
        let accepted = post_through(&api, &token, 2_000, move || victim.kill9()).await;
        let _rescuer = match profile {
            Profile::Distributed | Profile::Cluster => stack.spawn("worker", &slow_batches).await,
            Profile::Embedded => stack.spawn("serve", &slow_batches).await,
        };
        let b = backends(&stack).await;
        let app = app_id(&b.db, &token).await;
        wait_persisted(
            &b.db,
            app,
            1,
            accepted.len() as i64,
            Duration::from_secs(60),
        )
        .await;
        // The API survives on the distributed profile, so nothing can
        // commit unanswered there; the unique key forbids duplicates.
        let in_flight = if profile == Profile::Embedded { 16 } else { 0 };
        assert_exactly(&b.db, app, &accepted, in_flight).await;
        assert!(
            accepted.len() >= 1_000,
            "{profile:?}: the kill came after half were accepted"
        );
        stack.cleanup().await;
    }
}

/// A job that always fails ends dead after its attempts, with its history,
/// while the jobs around it flow.
#[tokio::test]
async fn a_job_that_always_fails_ends_dead_while_others_flow() {
    let fast_retries = [
        ("JOB_MAX_ATTEMPTS", "3"),
        ("RETRY_BASE_MS", "50"),
        ("RETRY_MAX_MS", "200"),
    ];
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &fast_retries).await;
        let token = app.create_app("poison").await;
        app.create_chat(&token).await;
        let b = backends(&stack).await;
        let id = app_id(&b.db, &token).await;
        // Message number 0 violates the table's CHECK: no attempt can succeed.
        let now = chat_links::now();
        let poison = MessageRow {
            application_id: id,
            chat_number: 1,
            number: 0,
            body: "poison".into(),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        b.queue
            .enqueue(QueueName::Messages, serde_json::to_string(&poison).unwrap())
            .await
            .unwrap();
        for i in 0..50 {
            app.create_message(&token, 1, &format!("fine {i}")).await;
        }
        let listed = app
            .wait_listed(
                &format!("/applications/{token}/chats/1/messages"),
                50,
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(
            numbers(&listed),
            (1..=50).collect::<Vec<_>>(),
            "{profile:?}"
        );

        let dead = wait_dead(&b, Duration::from_secs(30)).await;
        assert_eq!(dead.len(), 1, "{profile:?}");
        assert_eq!(
            dead[0].failures.len(),
            3,
            "{profile:?}: one failure per attempt"
        );
        assert_eq!(
            dead[0]
                .failures
                .iter()
                .map(|f| f.attempt)
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let stats = b.queue.stats(QueueName::Messages).await.unwrap();
        assert_eq!(
            (stats.dead, stats.retrying, stats.ready),
            (1, 0, 0),
            "{profile:?}"
        );
        let dashboard = app.get_root_json("/admin/api/queues").await;
        assert_eq!(dashboard[1]["queue"], "messages");
        assert_eq!(dashboard[1]["dead"], 1);
        stack.cleanup().await;
    }
}

/// With no worker at all, a created or updated chat or message is readable
/// at once; lists catch up once a worker runs.
#[tokio::test]
async fn writes_are_readable_before_any_worker_persists_them() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let api = stack.spawn("api", &[]).await;
        let token = api.create_app("ryw").await;
        let chat = api.create_chat(&token).await;
        let got: Value = api
            .get_json(&format!("/applications/{token}/chats/{chat}"))
            .await;
        assert_eq!(got["number"], chat, "{profile:?}");
        let msg = api.create_message(&token, chat, "before any worker").await;
        let path = format!("/applications/{token}/chats/{chat}/messages/{msg}");
        let got: Value = api.get_json(&path).await;
        assert_eq!(got["body"], "before any worker");
        let r = api
            .patch_json(&path, json!({ "body": "edited early" }))
            .await;
        assert_eq!(r.status(), 200);
        let got: Value = api.get_json(&path).await;
        assert_eq!(got["body"], "edited early", "{profile:?}");
        let listed = api
            .list_all(&format!("/applications/{token}/chats/{chat}/messages"))
            .await;
        // Lists show only persisted rows: on the embedded profile the
        // create's row was written at its accept, and its update waits for
        // a worker, as everything waits on the distributed one.
        let bodies: Vec<&Value> = listed.iter().map(|m| &m["body"]).collect();
        match profile {
            Profile::Embedded => assert_eq!(bodies, ["before any worker"]),
            _ => assert!(bodies.is_empty(), "{profile:?}: {bodies:?}"),
        }

        let _worker = stack.spawn("worker", &[]).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listed = api
                .list_all(&format!("/applications/{token}/chats/{chat}/messages"))
                .await;
            let bodies: Vec<&Value> = listed.iter().map(|m| &m["body"]).collect();
            if bodies == ["edited early"] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{profile:?}: the newest version was never persisted: {bodies:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stack.cleanup().await;
    }
}

/// SIGTERM stops every role cleanly and promptly; what was accepted before
/// it is persisted once the service is back.
#[tokio::test]
async fn sigterm_stops_cleanly_and_loses_nothing() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;
        let token = app.create_app("term").await;
        app.create_chat(&token).await;
        for i in 0..200 {
            app.create_message(&token, 1, &format!("before stop {i}"))
                .await;
        }
        assert!(
            app.terminate(Duration::from_secs(20)).await,
            "{profile:?}: exit 0 within 20 s of SIGTERM"
        );
        let again = stack.spawn("serve", &[]).await;
        let listed = again
            .wait_listed(
                &format!("/applications/{token}/chats/1/messages"),
                200,
                Duration::from_secs(40),
            )
            .await;
        assert_eq!(
            numbers(&listed),
            (1..=200).collect::<Vec<_>>(),
            "{profile:?}"
        );
        stack.cleanup().await;
    }
}

/// A message whose chat's job has not been persisted yet is still written:
/// messages are keyed by chat number, not by the chat's row.
#[tokio::test]
async fn messages_persist_while_their_chat_job_is_still_queued() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let api = stack.spawn("api", &[]).await;
        let token = api.create_app("order").await;
        let chat = api.create_chat(&token).await;
        for i in 0..3 {
            api.create_message(&token, chat, &format!("early {i}"))
                .await;
        }
        // Hold the chat's job as a consumer that never settles it.
        let b = stack.backends(Duration::from_secs(4)).await;
        let held = b
            .queue
            .claim(
                QueueName::Chats,
                "stalled-consumer",
                10,
                Duration::from_millis(200),
            )
            .await
            .unwrap();
        assert_eq!(held.len(), 1, "{profile:?}");

        let _worker = stack.spawn("worker", &[("CLAIM_IDLE_MS", "4000")]).await;
        let app = app_id(&b.db, &token).await;
        let got = wait_persisted(&b.db, app, chat, 3, Duration::from_secs(3)).await;
        assert_eq!(got, (3, 3, 3), "{profile:?}: messages landed");
        assert!(
            chat_store::repo::chats::find(&b.db, app, chat)
                .await
                .unwrap()
                .is_none(),
            "{profile:?}: while the chat row itself is not written yet"
        );
        // Once the stalled claim lapses, the worker takes the chat over.
        let deadline = Instant::now() + Duration::from_secs(20);
        while chat_store::repo::chats::find(&b.db, app, chat)
            .await
            .unwrap()
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "{profile:?}: chat never persisted"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stack.cleanup().await;
    }
}

/// A job whose worker dies every time it runs it never returns a failure
/// to count; its unsettled deliveries count instead, and it ends dead.
#[tokio::test]
async fn a_job_that_keeps_killing_its_worker_ends_dead() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let b = stack.backends(Duration::from_millis(100)).await;
        let now = chat_links::now();
        let row = MessageRow {
            application_id: 1,
            chat_number: 1,
            number: 1,
            body: "deadly".into(),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        b.queue
            .enqueue(QueueName::Messages, serde_json::to_string(&row).unwrap())
            .await
            .unwrap();
        // Three workers take the job and die holding it.
        for (i, victim) in ["victim-1", "victim-2", "victim-3"].iter().enumerate() {
            let held = b
                .queue
                .claim(QueueName::Messages, victim, 1, Duration::from_millis(200))
                .await
                .unwrap();
            assert_eq!(held.len(), 1, "{profile:?}: delivery {}", i + 1);
            assert_eq!(held[0].attempt as usize, i + 1, "{profile:?}");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let _worker = stack
            .spawn(
                "worker",
                &[("JOB_MAX_ATTEMPTS", "3"), ("CLAIM_IDLE_MS", "100")],
            )
            .await;
        let dead = wait_dead(&b, Duration::from_secs(20)).await;
        assert_eq!(dead.len(), 1, "{profile:?}");
        let reason = &dead[0].failures.last().unwrap().error;
        assert!(reason.contains("without settling"), "{profile:?}: {reason}");
        assert_eq!(
            persisted(&b.db, 1, 1).await.0,
            0,
            "{profile:?}: it never ran"
        );
        stack.cleanup().await;
    }
}
