//! The search route end to end: a message that got its 201 becomes
//! searchable through the API, on both profiles, on tantivy and (when
//! `OSMEM_SERVER` is set) on the OpenSearch-compatible emulator.
mod common;

use std::time::{Duration, Instant};

use common::{
    Stack, profiles,
    search::{EngineKind, engines, start_emulator},
};
use serde_json::{Value, json};

/// Polls a search until it returns `n` items; returns them and how long
/// that took.
async fn wait_found(app: &common::App, path: &str, n: usize) -> (Vec<Value>, Duration) {
    let started = Instant::now();
    loop {
        let r = app.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        let body: Value = r.json().await.unwrap();
        let items = body["items"].as_array().unwrap().clone();
        if items.len() == n {
            return (items, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{path}: {} items, want {n}",
            items.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn accepted_messages_become_searchable_and_updates_replace_their_text() {
    for profile in profiles() {
        for kind in engines() {
            let stack = Stack::new(profile).await;
            let mut emulator = None;
            let mut env: Vec<(String, String)> = Vec::new();
            match kind {
                EngineKind::Tantivy => {}
                EngineKind::Emulator => {
                    let (url, child) = start_emulator();
                    emulator = Some(child);
                    env.push(("ELASTICSEARCH_URL".into(), url));
                }
                // The real cluster is covered by tests/search.rs.
                EngineKind::Elasticsearch => continue,
            }
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let app = stack.spawn("serve", &env).await;
            let token = app.create_app("searchers").await;
            let chat = app.create_chat(&token).await;
            let other = app.create_chat(&token).await;
            app.create_message(&token, chat, "Hello wonderful world")
                .await;
            app.create_message(&token, chat, "Café crème").await;
            app.create_message(&token, other, "Hello from elsewhere")
                .await;

            let search = |chat: i64, q: &str| {
                format!("/applications/{token}/chats/{chat}/messages/search?q={q}")
            };
            let (items, lag) = wait_found(&app, &search(chat, "ello"), 1).await;
            eprintln!("{profile:?}/{kind:?}: searchable {lag:?} after the 201s");
            let hit = &items[0];
            assert_eq!(hit["number"], 1);
            assert_eq!(hit["body"], "Hello wonderful world");
            assert!(hit["created_at"].is_string() && hit["updated_at"].is_string());
            assert!(hit.get("id").is_none() && hit.get("version").is_none());
            wait_found(&app, &search(chat, "CAFE"), 1).await;
            wait_found(&app, &search(other, "hel"), 1).await;
            wait_found(&app, &search(chat, "hel%20wor"), 1).await;

            let r = app
                .put_json(
                    &format!("/applications/{token}/chats/{chat}/messages/1"),
                    json!({ "body": "Goodbye for now" }),
                )
                .await;
            assert_eq!(r.status(), 200);
            wait_found(&app, &search(chat, "goodbye"), 1).await;
            wait_found(&app, &search(chat, "wonderful"), 0).await;

            drop(emulator.take().map(|mut c| {
                let _ = c.kill();
                c.wait()
            }));
            stack.cleanup().await;
        }
    }
}

#[tokio::test]
async fn bad_searches_get_problems() {
    let stack = Stack::new(common::Profile::Embedded).await;
    let app = stack.spawn("serve", &[]).await;
    let token = app.create_app("a").await;
    let chat = app.create_chat(&token).await;
    let base = format!("/applications/{token}/chats/{chat}/messages/search");
    for (query, status) in [
        ("", 422),
        ("?q=", 422),
        ("?q=%20%20", 422),
        ("?q=x&limit=0", 400),
        ("?q=x&limit=101", 400),
        ("?q=x&after=garbage", 400),
        ("?q=x&limit=", 400),
        ("?q=x&after=", 400),
    ] {
        let r = app.get(&format!("{base}{query}")).await;
        assert_eq!(r.status(), status, "{query}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
    }
    let r = app
        .get(&format!(
            "/applications/{token}/chats/99/messages/search?q=x"
        ))
        .await;
    assert_eq!(r.status(), 404);
    let r = app
        .get("/applications/nope/chats/1/messages/search?q=x")
        .await;
    assert_eq!(r.status(), 404);
    let empty: Value = app.get_json(&format!("{base}?q=nothing")).await;
    assert_eq!(empty, json!({ "items": [], "next_after": null }));
    stack.cleanup().await;
}

#[tokio::test]
async fn chat_reindex_repairs_drift_and_rebuilds_from_the_command_line() {
    let stack = Stack::new(common::Profile::Embedded).await;
    let app = stack.spawn("serve", &[]).await;
    let token = app.create_app("reindexed").await;
    let chat = app.create_chat(&token).await;
    for k in 0..30 {
        app.create_message(&token, chat, &format!("note number {k}"))
            .await;
    }
    let search = format!("/applications/{token}/chats/{chat}/messages/search?q=note&limit=100");
    wait_found(&app, &search, 30).await;
    // A rebuild would retire the generation the server searches: refused
    // while the server holds the index, with the reason.
    let out = stack.run_chat(&["reindex"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("is in use by another process"), "{said}");
    wait_found(&app, &search, 30).await;
    assert!(app.terminate(Duration::from_secs(20)).await);

    // The index is lost; the database still has every message.
    std::fs::remove_dir_all(stack.data_dir.join("search")).unwrap();
    let out = stack.run_chat(&["reindex", "--check", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("has 30 messages in the database and 0 in the index"),
        "{text}"
    );
    assert!(
        text.contains("checked 1 chats: 1 drifted, 0 repaired"),
        "{text}"
    );

    let out = stack.run_chat(&["reindex", "--check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 drifted, 1 repaired"), "{text}");
    let out = stack.run_chat(&["reindex", "--check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("checked 1 chats: 0 drifted"), "{text}");

    let out = stack.run_chat(&["reindex"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("indexed 30 messages into generation g"),
        "{text}"
    );

    let app = stack.spawn("serve", &[]).await;
    wait_found(&app, &search, 30).await;
    stack.cleanup().await;
}

#[tokio::test]
async fn split_roles_without_elasticsearch_refuse_search_and_say_so() {
    // Each role would open its own embedded index: the API's would stay
    // empty while the worker filled another, and searches would silently
    // find nothing.
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        std::fs::create_dir_all(&stack.data_dir).unwrap();
        let logs = [
            stack.data_dir.join("api.log"),
            stack.data_dir.join("worker.log"),
        ];
        let warn = [("RUST_LOG", "warn")];
        let api = stack.spawn_logged("api", &warn, Some(&logs[0])).await;
        let _worker = stack.spawn_logged("worker", &warn, Some(&logs[1])).await;
        let token = api.create_app("split").await;
        let chat = api.create_chat(&token).await;
        api.create_message(&token, chat, "hello split roles").await;
        api.wait_listed(
            &format!("/applications/{token}/chats/{chat}/messages"),
            1,
            Duration::from_secs(20),
        )
        .await;

        let r = api
            .get(&format!(
                "/applications/{token}/chats/{chat}/messages/search?q=hello"
            ))
            .await;
        assert_eq!(r.status(), 503, "{profile:?}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(
            problem["type"], "/problems/search-not-configured",
            "{problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("ELASTICSEARCH_URL"),
            "{problem}"
        );
        let queues = api.get_root_json("/admin/api/queues").await;
        assert_eq!(queues[1]["queue"], "messages");
        assert_eq!(queues[2]["queue"], "index");
        let waiting = if profile == common::Profile::Embedded {
            // The embedded intake wrote the row at its accept and queued its
            // indexing, which waits for a process with the index.
            assert_eq!(queues[1]["done"], 0, "no persistence job: {queues}");
            1
        } else {
            // No index job was queued for a worker that has no index.
            assert!(queues[1]["done"].as_u64() >= Some(1), "{queues}");
            0
        };
        assert_eq!(queues[2]["ready"], waiting, "{profile:?}: {queues}");
        for state in ["in_flight", "retrying", "dead", "done"] {
            assert_eq!(queues[2][state], 0, "{profile:?}: index {state}: {queues}");
        }
        for log in &logs {
            // The worker says so once it has started, which nothing above
            // waited for on the embedded profile: the intake lists the
            // message without it.
            let warning = format!("{profile:?}: {}'s warning", log.display());
            common::wait_for(&warning, Duration::from_secs(20), async || {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                text.contains("search is not configured").then_some(())
            })
            .await;
        }
        if profile == common::Profile::Embedded {
            // `chat serve` on the same file runs the waiting index job.
            drop((api, _worker));
            let app = stack.spawn("serve", &[]).await;
            let search = format!("/applications/{token}/chats/{chat}/messages/search?q=split");
            wait_found(&app, &search, 1).await;
        }
        stack.cleanup().await;
    }
}
