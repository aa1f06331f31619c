//! The v1 contract: every route, every status, every accepted encoding, on
//! every profile this run can reach.
mod common;

use common::{Profile, Stack, profiles, profiles_with_cluster};
use serde_json::{Value, json};

fn has_key_named_id(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k == "id" || k.ends_with("_id") || has_key_named_id(v)),
        Value::Array(a) => a.iter().any(has_key_named_id),
        _ => false,
    }
}

async fn assert_problem(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status().as_u16(), status, "expected {status}");
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["status"], status);
    for k in ["type", "title", "detail"] {
        assert!(p[k].is_string(), "problem lacks {k}: {p}");
    }
    p
}

#[tokio::test]
async fn applications_are_created_read_and_updated() {
    for profile in profiles_with_cluster() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;

        let r = app
            .post_json("/applications", json!({ "name": "Acme" }))
            .await;
        assert_eq!(r.status(), 201, "{profile:?}");
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let created: Value = r.json().await.unwrap();
        let token = created["token"].as_str().unwrap();
        assert!(
            token.len() >= 22
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(location, format!("/api/v1/applications/{token}"));
        assert_eq!(created["name"], "Acme");
        assert_eq!(created["chats_count"], 0);
        assert!(!has_key_named_id(&created));

        let other = app.create_app("Other").await;
        assert_ne!(other, token, "tokens are unique");

        let got: Value = app.get_json(&format!("/applications/{token}")).await;
        assert_eq!(got["name"], "Acme");

        let put = app
            .put_json(&format!("/applications/{token}"), json!({"name": "Acme 2"}))
            .await;
        assert_eq!(put.status(), 200);
        let patch = app
            .http
            .patch(app.url(&format!("/applications/{token}")))
            .form(&[("name", "Acme 3")])
            .send()
            .await
            .unwrap();
        assert_eq!(patch.status(), 200);
        let got: Value = app.get_json(&format!("/applications/{token}")).await;
        assert_eq!(
            got["name"], "Acme 3",
            "{profile:?}: update is visible at once"
        );

        assert_problem(
            app.post_json("/applications", json!({ "name": "" })).await,
            422,
        )
        .await;
        assert_problem(
            app.post_json("/applications", json!({ "name": "   " }))
                .await,
            422,
        )
        .await;
        assert_problem(app.post_json("/applications", json!({})).await, 422).await;
        assert_problem(app.get("/applications/nope").await, 404).await;
        let malformed = app
            .http
            .post(app.url("/applications"))
            .header("content-type", "application/json")
            .body("{\"name\":")
            .send()
            .await
            .unwrap();
        assert_problem(malformed, 400).await;
        let xml = app
            .http
            .post(app.url("/applications"))
            .header("content-type", "application/xml")
            .body("<a/>")
            .send()
            .await
            .unwrap();
        assert_problem(xml, 415).await;
        assert_problem(app.get("/nothing/here").await, 404).await;
        stack.cleanup().await;
    }
}

#[tokio::test]
async fn chats_are_numbered_listed_and_updated() {
    for profile in profiles_with_cluster() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;
        let token = app.create_app("a").await;

        let r = app
            .post_json(
                &format!("/applications/{token}/chats"),
                json!({ "name": "general" }),
            )
            .await;
        assert_eq!(r.status(), 201);
        assert_eq!(
            r.headers()["location"],
            format!("/api/v1/applications/{token}/chats/1").as_str()
        );
        let chat: Value = r.json().await.unwrap();
        assert_eq!(chat["number"], 1);
        assert_eq!(chat["name"], "general");
        assert_eq!(chat["messages_count"], 0);
        assert!(!has_key_named_id(&chat));
        // A chat with no body at all: name is optional.
        let r = app
            .http
            .post(app.url(&format!("/applications/{token}/chats")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        for _ in 0..3 {
            app.create_chat(&token).await;
        }

        let put = app
            .put_json(
                &format!("/applications/{token}/chats/1"),
                json!({"name": "renamed"}),
            )
            .await;
        assert_eq!(put.status(), 200);
        let got: Value = app
            .get_json(&format!("/applications/{token}/chats/1"))
            .await;
        assert_eq!(
            got["name"], "renamed",
            "{profile:?}: read-your-writes after PUT"
        );
        let patch = app
            .patch_json(
                &format!("/applications/{token}/chats/2"),
                json!({"name": "two"}),
            )
            .await;
        assert_eq!(patch.status(), 200);
        let got: Value = app
            .get_json(&format!("/applications/{token}/chats/2"))
            .await;
        assert_eq!(got["name"], "two");

        let all = app
            .wait_listed(
                &format!("/applications/{token}/chats"),
                5,
                std::time::Duration::from_secs(20),
            )
            .await;
        assert_eq!(common::numbers(&all), vec![1, 2, 3, 4, 5]);
        let page: Value = app
            .get_json(&format!("/applications/{token}/chats?limit=2"))
            .await;
        assert_eq!(
            common::numbers(page["items"].as_array().unwrap()),
            vec![1, 2]
        );
        assert_eq!(page["next_after"], 2);
        let page: Value = app
            .get_json(&format!("/applications/{token}/chats?limit=2&after=4"))
            .await;
        assert_eq!(common::numbers(page["items"].as_array().unwrap()), vec![5]);
        assert_eq!(page["next_after"], Value::Null);

        assert_problem(
            app.get(&format!("/applications/{token}/chats/abc")).await,
            400,
        )
        .await;
        assert_problem(
            app.get(&format!("/applications/{token}/chats/-1")).await,
            400,
        )
        .await;
        assert_problem(
            app.get(&format!("/applications/{token}/chats/99")).await,
            404,
        )
        .await;
        assert_problem(
            app.get(&format!("/applications/{token}/chats?limit=0"))
                .await,
            400,
        )
        .await;
        assert_problem(
            app.get(&format!("/applications/{token}/chats?limit=201"))
                .await,
            400,
        )
        .await;
        assert_problem(
            app.get(&format!("/applications/{token}/chats?after=x"))
                .await,
            400,
        )
        .await;
        // Empty values are not "absent": the document types both as integers.
        assert_problem(
            app.get(&format!("/applications/{token}/chats?after=&limit="))
                .await,
            400,
        )
        .await;
        assert_problem(app.get("/applications/unknown/chats").await, 404).await;
        assert_problem(
            app.post_json("/applications/unknown/chats", json!({}))
                .await,
            404,
        )
        .await;
        stack.cleanup().await;
    }
}

#[tokio::test]
async fn messages_accept_every_encoding_and_keep_bytes_exact() {
    let texts = [
        "مرحبا بالعالم",
        "emoji 🎉👍🏽 family 👨‍👩‍👧",
        "中文 日本語 한국어",
        "  leading and trailing spaces  \n",
    ];
    for profile in profiles_with_cluster() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[("MAX_MESSAGE_BYTES", "1024")]).await;
        let token = app.create_app("a").await;
        let chat = app.create_chat(&token).await;
        let path = format!("/applications/{token}/chats/{chat}/messages");

        for (i, text) in texts.iter().enumerate() {
            let r = app.post_json(&path, json!({ "body": text })).await;
            assert_eq!(r.status(), 201);
            assert_eq!(
                r.headers()["location"],
                format!("/api/v1{path}/{}", i + 1).as_str()
            );
        }
        let multipart = reqwest::multipart::Form::new().text("body", "via multipart ✓");
        let r = app
            .http
            .post(app.url(&path))
            .multipart(multipart)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{profile:?}: multipart");
        let rails = reqwest::multipart::Form::new().text("message[body]", "rails style");
        let r = app
            .http
            .post(app.url(&path))
            .multipart(rails)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = app
            .http
            .post(app.url(&path))
            .form(&[("body", "via form & co")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{profile:?}: urlencoded");

        let got: Value = app.get_json(&format!("{path}/2")).await;
        assert_eq!(got["body"], texts[1]);
        assert!(!has_key_named_id(&got));

        let listed = app
            .wait_listed(&path, 7, std::time::Duration::from_secs(20))
            .await;
        assert_eq!(common::numbers(&listed), (1..=7).collect::<Vec<_>>());
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(
                listed[i]["body"].as_str().unwrap().as_bytes(),
                text.as_bytes(),
                "{profile:?}"
            );
        }
        assert_eq!(listed[4]["body"], "via multipart ✓");
        assert_eq!(listed[5]["body"], "rails style");
        assert_eq!(listed[6]["body"], "via form & co");

        let put = app
            .put_json(&format!("{path}/1"), json!({"body": "edited"}))
            .await;
        assert_eq!(put.status(), 200);
        let got: Value = app.get_json(&format!("{path}/1")).await;
        assert_eq!(
            got["body"], "edited",
            "{profile:?}: read-your-writes after PUT"
        );
        let patch = app
            .http
            .patch(app.url(&format!("{path}/1")))
            .form(&[("body", "patched")])
            .send()
            .await
            .unwrap();
        assert_eq!(patch.status(), 200);
        let got: Value = app.get_json(&format!("{path}/1")).await;
        assert_eq!(got["body"], "patched");

        assert_problem(app.post_json(&path, json!({ "body": "" })).await, 422).await;
        assert_problem(app.post_json(&path, json!({})).await, 422).await;
        assert_problem(
            app.post_json(&path, json!({ "body": "x".repeat(1025) }))
                .await,
            413,
        )
        .await;
        assert_problem(
            app.post_json(&path, json!({ "body": "x".repeat(100_000) }))
                .await,
            413,
        )
        .await;
        assert_problem(app.get(&format!("{path}/99")).await, 404).await;
        assert_problem(app.get(&format!("{path}/one")).await, 400).await;
        assert_problem(
            app.post_json(
                &format!("/applications/{token}/chats/42/messages"),
                json!({"body": "x"}),
            )
            .await,
            404,
        )
        .await;
        assert_problem(
            app.get(&format!("/applications/{token}/chats/42/messages"))
                .await,
            404,
        )
        .await;
        let bad = app
            .http
            .post(app.url(&path))
            .header("content-type", "application/json")
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_problem(bad, 400).await;
        let text = app
            .http
            .post(app.url(&path))
            .header("content-type", "text/plain")
            .body("hi")
            .send()
            .await
            .unwrap();
        assert_problem(text, 415).await;
        stack.cleanup().await;
    }
}

#[tokio::test]
async fn health_reports_live_and_ready() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;
        let live = app
            .http
            .get(format!("{}/health/live", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(live.status(), 200);
        let ready = app
            .http
            .get(format!("{}/health/ready", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "{profile:?}");
        stack.cleanup().await;
    }
}

/// Readiness must fail when the queue's server is gone. Uses a private
/// redis-server so the shared one is never touched.
#[tokio::test]
async fn readiness_and_writes_are_503_when_redis_is_down() {
    if !profiles().contains(&Profile::Distributed) {
        eprintln!("distributed profile not configured: skipping");
        return;
    }
    let mut stack = Stack::new(Profile::Distributed).await;
    let port = common::free_port();
    let mut redis = common::private_redis(port);
    stack.redis_url = Some(format!("redis://127.0.0.1:{port}"));
    let app = stack.spawn("api", &[]).await;
    let token = app.create_app("outage").await;
    let _ = redis.kill();
    let _ = redis.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let r = app
            .http
            .get(format!("{}/health/ready", app.base))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            // It names what is down; its error (with hosts and ports) is
            // for the log, not for anyone who can reach the probe.
            let problem: serde_json::Value = r.json().await.unwrap();
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                ["queue is unavailable", "queue gave no answer within 2 s"].contains(&detail),
                "{detail}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ready stayed {}",
            r.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A write that cannot be queued is refused with 503, not accepted.
    let r = app
        .post_json(&format!("/applications/{token}/chats"), json!({}))
        .await;
    assert_problem(r, 503).await;
    stack.redis_url = None;
    stack.cleanup().await;
}

/// The document is served as the running server builds it, and every
/// method it does not list on a path answers 405 with an `Allow` header.
#[tokio::test]
async fn the_openapi_document_and_swagger_ui_are_served() {
    let stack = Stack::new(Profile::Embedded).await;
    let app = stack.spawn("serve", &[]).await;
    let http = reqwest::Client::new();

    let r = http
        .get(format!("{}/api-docs/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/v1/applications/{token}/chats/{number}/messages/search"));
    assert!(doc["components"]["schemas"]["Problem"].is_object());

    let ui = http
        .get(format!("{}/docs/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 200);
    assert!(ui.text().await.unwrap().contains("swagger-ui"));
    let init = http
        .get(format!("{}/docs/swagger-initializer.js", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/api-docs/openapi.json"), "{init}");

    let token = app.create_app("Docs").await;
    let chat = app.create_chat(&token).await;
    let message = app.create_message(&token, chat, "hello").await;
    for (template, item) in paths {
        let path = template
            .replace("{token}", &token)
            .replace("{number}", &chat.to_string())
            .replace("{message}", &message.to_string());
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if item.get(method.to_ascii_lowercase()).is_some() {
                continue;
            }
            let r = http
                .request(method.parse().unwrap(), format!("{}{path}", app.base))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 405, "{method} {template}");
            assert!(r.headers().contains_key("allow"), "{method} {template}");
        }
    }
    stack.cleanup().await;
}
