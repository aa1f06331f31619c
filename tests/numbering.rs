//! Numbers stay exactly 1..N under concurrency, across API processes and
//! after Redis loses its counters.
mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{App, Profile, Stack, numbers, profiles};
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
    for profile in profiles() {
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

/// Redis loses its counters while rows exist: numbering continues after the
/// highest persisted number instead of starting again at 1.
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
            Profile::Distributed => {
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

        assert_eq!(app.create_chat(&token).await, 4, "{profile:?}");
        assert_eq!(
            app.create_message(&token, 1, "after").await,
            5,
            "{profile:?}"
        );
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
