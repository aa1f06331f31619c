//! Numbers stay exactly 1..N under concurrency, across API processes and
//! after Redis loses its counters.
mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{App, Profile, Stack, numbers, profiles, profiles_with_cluster};
use futures::future::join_all;
use serde_json::json;

/// Creates `total` resources from `clients` concurrent clients and returns
/// the numbers handed out.
async fn concurrent_posts(apps: &[&App], path: &str, clients: usize, total: usize) -> Vec<i64> {
    let tasks = (0..clients).map(|c| {
        let app = apps[c % apps.len()];
        let mine = total / clients + usize::from(c < total % clients);
        async move {
            let mut got = Vec::new();
            for i in 0..mine {
                let r = app
                    .post_json(
                        path,
                        json!({ "name": format!("c{c}-{i}"), "body": format!("m{c}-{i}") }),
                    )
                    .await;
                assert_eq!(r.status(), 201);
                let v: serde_json::Value = r.json().await.unwrap();
                got.push(v["number"].as_i64().unwrap());
            }
            got
        }
    });
    join_all(tasks).await.into_iter().flatten().collect()
}

fn assert_exactly_one_to_n(mut got: Vec<i64>, n: usize, what: &str) {
    got.sort_unstable();
    assert_eq!(got, (1..=n as i64).collect::<Vec<_>>(), "{what}");
}

#[tokio::test]
async fn sixteen_concurrent_clients_get_exactly_one_to_n() {
    for profile in profiles_with_cluster() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;
        let token = app.create_app("busy").await;

        let chats =
            concurrent_posts(&[&app], &format!("/applications/{token}/chats"), 16, 60).await;
        let n_chats = chats.len();
        assert_eq!(n_chats, 60);
        assert_exactly_one_to_n(chats, n_chats, "chat numbers");

        // 16 clients spread over 4 chats, 25 messages each.
        let mut per_chat = vec![Vec::new(); 4];
        let tasks = (0..16).map(|c| {
            let app = &app;
            let token = &token;
            async move {
                let chat = (c % 4) + 1;
                let mut got = Vec::new();
                for i in 0..25 {
                    let n = app
                        .create_message(token, chat as i64, &format!("{c}/{i}"))
                        .await;
                    got.push(n);
                }
                (chat, got)
            }
        });
        for (chat, got) in join_all(tasks).await {
            per_chat[chat - 1].extend(got);
        }
        for (i, got) in per_chat.into_iter().enumerate() {
            assert_exactly_one_to_n(got, 100, &format!("{profile:?} chat {}", i + 1));
            let listed = app
                .wait_listed(
                    &format!("/applications/{token}/chats/{}/messages", i + 1),
                    100,
                    Duration::from_secs(30),
                )
                .await;
            assert_eq!(
                numbers(&listed),
                (1..=100).collect::<Vec<_>>(),
                "{profile:?}: persisted exactly once"
            );
        }
        let listed = app
            .wait_listed(
                &format!("/applications/{token}/chats"),
                n_chats,
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(listed.len(), n_chats);
        stack.cleanup().await;
    }
}

#[tokio::test]
async fn two_api_processes_sharing_redis_never_duplicate_a_number() {
    if !profiles().contains(&Profile::Distributed) {
        eprintln!("distributed profile not configured: skipping");
        return;
    }
    let stack = Stack::new(Profile::Distributed).await;
    let a = stack.spawn("api", &[]).await;
    let b = stack.spawn("api", &[]).await;
    let _worker = stack.spawn("worker", &[]).await;
    let token = a.create_app("shared").await;
    let chats = concurrent_posts(&[&a, &b], &format!("/applications/{token}/chats"), 16, 80).await;
    assert_exactly_one_to_n(chats, 80, "chats across two API processes");
    let messages = concurrent_posts(
        &[&a, &b],
        &format!("/applications/{token}/chats/1/messages"),
        16,
        160,
    )
    .await;
    assert_exactly_one_to_n(messages, 160, "messages across two API processes");
    let listed = a
        .wait_listed(
            &format!("/applications/{token}/chats/1/messages"),
            160,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(numbers(&listed), (1..=160).collect::<Vec<_>>());
    stack.cleanup().await;
}

/// The counters are lost while rows exist: numbering never hands a number
/// out again. On SQLite it continues right after the highest persisted
/// number; on Redis, after the ceiling the database holds, which lies above
/// every number Redis may have handed out (some numbers are skipped).
#[tokio::test]
async fn numbering_continues_after_counters_are_lost() {
    for profile in profiles() {
        let mut stack = Stack::new(profile).await;
        // A private Redis, so that it can really be flushed.
        let mut private = None;
        if profile == Profile::Distributed {
            let port = common::free_port();
            private = Some(common::private_redis(port));
            stack.redis_url = Some(format!("redis://127.0.0.1:{port}"));
        }
        let app = stack.spawn("serve", &[]).await;
        let token = app.create_app("a").await;
        for _ in 0..3 {
            app.create_chat(&token).await;
        }
        for i in 0..4 {
            app.create_message(&token, 1, &format!("m{i}")).await;
        }
        app.wait_listed(
            &format!("/applications/{token}/chats"),
            3,
            Duration::from_secs(20),
        )
        .await;
        app.wait_listed(
            &format!("/applications/{token}/chats/1/messages"),
            4,
            Duration::from_secs(20),
        )
        .await;

        match profile {
            Profile::Distributed | Profile::Cluster => {
                // Counters, versions, pending entries, the streams and their
                // consumer group: all gone.
                let client = stack.redis().unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
            }
            Profile::Embedded => {
                use sea_orm::ConnectionTrait;
                stack
                    .db()
                    .await
                    .execute_unprepared("DELETE FROM counters")
                    .await
                    .unwrap();
            }
        }

        let chat = app.create_chat(&token).await;
        let message = app.create_message(&token, 1, "after").await;
        match profile {
            Profile::Embedded => assert_eq!((chat, message), (4, 5)),
            Profile::Distributed | Profile::Cluster => {
                assert!(chat > 3, "chat {chat} reuses a number");
                assert!(message > 4, "message {message} reuses a number");
            }
        }
        // An update after the loss still wins over the persisted state.
        let r = app
            .put_json(
                &format!("/applications/{token}/chats/1/messages/1"),
                json!({ "body": "new" }),
            )
            .await;
        assert_eq!(r.status(), 200);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let listed = app
                .list_all(&format!("/applications/{token}/chats/1/messages"))
                .await;
            if listed.len() == 5 && listed[0]["body"] == "new" {
                let set: BTreeSet<i64> = numbers(&listed).into_iter().collect();
                assert_eq!(set.len(), 5);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{profile:?}: {listed:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stack.cleanup().await;
        if let Some(mut redis) = private {
            let _ = redis.kill();
            let _ = redis.wait();
        }
    }
}

/// Redis is flushed while a worker holds claimed messages that are not yet
/// in the database: the messages accepted afterwards get numbers of their
/// own, and no accepted message overwrites another.
#[tokio::test]
async fn a_flush_while_a_worker_holds_jobs_reuses_no_number() {
    if !profiles().contains(&Profile::Distributed) {
        eprintln!("TEST_MYSQL_URL / TEST_REDIS_URL unset: skipped");
        return;
    }
    let mut stack = Stack::new(Profile::Distributed).await;
    let port = common::free_port();
    let mut private = common::private_redis(port);
    stack.redis_url = Some(format!("redis://127.0.0.1:{port}"));
    // Batches linger, so the worker holds what it claims for seconds.
    let app = stack
        .spawn(
            "serve",
            &[("BATCH_LINGER_MS", "3000"), ("BATCH_SIZE", "1000")],
        )
        .await;
    let token = app.create_app("flush").await;
    let chat = app.create_chat(&token).await;
    let path = format!("/applications/{token}/chats/{chat}/messages");
    app.wait_listed(
        &format!("/applications/{token}/chats"),
        1,
        Duration::from_secs(20),
    )
    .await;
    let mut told = Vec::new();
    for i in 0..10 {
        let body = format!("before {i}");
        told.push((app.create_message(&token, chat, &body).await, body));
    }
    // Claimed by now, and lingering in the worker's batch.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let client = stack.redis().unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    for i in 0..10 {
        let body = format!("after {i}");
        told.push((app.create_message(&token, chat, &body).await, body));
    }
    let numbers_told: BTreeSet<i64> = told.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers_told.len(),
        20,
        "a number was handed out twice: {told:?}"
    );
    let listed = app.wait_listed(&path, 20, Duration::from_secs(30)).await;
    for (number, body) in &told {
        let found: Vec<_> = listed
            .iter()
            .filter(|m| m["number"] == *number)
            .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(found, vec![body.clone()], "message {number}: {listed:?}");
    }
    assert_eq!(listed.len(), 20, "{listed:?}");
    stack.cleanup().await;
    let _ = private.kill();
    let _ = private.wait();
}
