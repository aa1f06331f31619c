//! What keeps the API up under abuse and load: rate limits per token and
//! per address (shared by every API process on the distributed profile),
//! load shedding at the concurrency cap, and a request id on every
//! response.
mod common;

use std::time::{Duration, Instant};

use common::{Profile, Stack, profiles, profiles_with_cluster};
use reqwest::StatusCode;
use serde_json::json;

/// A header's value as a number.
fn number(r: &reqwest::Response, name: &str) -> u64 {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} on a {}", r.status()))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_over_its_limit_gets_429_with_headers_and_recovers() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        // 5 writes per 2 s per token; the address limit stays generous.
        let app = stack
            .spawn(
                "api",
                &[
                    ("RATE_LIMIT_WINDOW_SECS", "2"),
                    ("RATE_LIMIT_TOKEN_WRITES", "5"),
                ],
            )
            .await;
        let token = app.create_app("limited").await;
        let path = format!("/applications/{token}/chats");
        let mut statuses = Vec::new();
        let mut refused = None;
        for _ in 0..8 {
            let r = app.post_json(&path, json!({})).await;
            statuses.push(r.status());
            assert_eq!(number(&r, "ratelimit-limit"), 5);
            if r.status() == StatusCode::TOO_MANY_REQUESTS && refused.is_none() {
                refused = Some(r);
            }
        }
        let created = statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count();
        assert_eq!(created, 5, "{profile:?}: {statuses:?}");
        let r = refused.expect("a refused request");
        assert_eq!(number(&r, "ratelimit-remaining"), 0);
        let retry = number(&r, "retry-after");
        assert!((1..=2).contains(&retry), "retry-after {retry}");
        assert!(number(&r, "ratelimit-reset") <= 2);
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "a problem body"
        );
        let problem: serde_json::Value = r.json().await.unwrap();
        assert_eq!(problem["status"], 429);
        assert_eq!(problem["type"], "/problems/rate-limited");
        // A write that would accept nothing (its chat does not exist) is
        // limited too: on Redis the limit is checked in the accept, and
        // such a write is counted after it fails.
        let r = app
            .post_json(
                &format!("/applications/{token}/chats/999/messages"),
                json!({ "body": "x" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{profile:?}");

        // Another application is not limited by this one's token, and
        // reads count separately from writes.
        let other = app.create_app("neighbour").await;
        let r = app
            .post_json(&format!("/applications/{other}/chats"), json!({}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(
            app.get(&format!("/applications/{token}")).await.status(),
            StatusCode::OK
        );

        // After the window, the token may write again.
        tokio::time::sleep(Duration::from_secs(retry)).await;
        let r = app.post_json(&path, json!({})).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{profile:?}: recovered");
        let chat: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            chat["number"], 6,
            "{profile:?}: refused writes spent no number"
        );
        // Health is never limited.
        for _ in 0..10 {
            let r = reqwest::get(format!("{}/health/live", app.base))
                .await
                .unwrap();
            assert!(r.status().is_success());
            assert!(r.headers().get("ratelimit-limit").is_none());
        }
        stack.cleanup().await;
    }
}

/// A read of one chat or message is limited like any read, on Redis in
/// the call that reads its pending entry: the limit's headers count down,
/// and past it every read (folded or not, known or unknown) is refused.
#[tokio::test(flavor = "multi_thread")]
async fn reads_of_one_chat_or_message_count_against_the_read_limit() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack
            .spawn(
                "api",
                &[
                    ("RATE_LIMIT_WINDOW_SECS", "60"),
                    ("RATE_LIMIT_TOKEN_READS", "4"),
                ],
            )
            .await;
        let token = app.create_app("reader").await;
        let chat = format!("/applications/{token}/chats/1");
        let r = app
            .post_json(&format!("/applications/{token}/chats"), json!({}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = app
            .post_json(&format!("{chat}/messages"), json!({ "body": "hi" }))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let message = format!("{chat}/messages/1");
        let mut remaining = Vec::new();
        for path in [&chat, &message, &message] {
            let r = app.get(path).await;
            assert_eq!(r.status(), StatusCode::OK, "{profile:?} {path}");
            assert_eq!(number(&r, "ratelimit-limit"), 4);
            remaining.push(number(&r, "ratelimit-remaining"));
        }
        assert_eq!(remaining, [3, 2, 1], "{profile:?}");
        // The last read the window allows; then none of either kind.
        assert_eq!(app.get(&chat).await.status(), StatusCode::OK);
        for path in [&message, &chat, &format!("{chat}/messages/99")] {
            let r = app.get(path).await;
            assert_eq!(
                r.status(),
                StatusCode::TOO_MANY_REQUESTS,
                "{profile:?} {path}"
            );
            assert_eq!(number(&r, "ratelimit-remaining"), 0);
            assert!(number(&r, "retry-after") >= 1);
        }
        assert_eq!(
            app.get(&format!("/applications/{token}")).await.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{profile:?}: one read limit for every read"
        );
        stack.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_api_processes_share_one_limit() {
    if !profiles().contains(&Profile::Distributed) {
        eprintln!("TEST_MYSQL_URL/TEST_REDIS_URL unset: skipping the shared-limit test");
        return;
    }
    // On a cluster too, where each key is checked in a call of its own.
    for profile in profiles_with_cluster() {
        if profile != Profile::Embedded {
            shared_limit_on(profile).await;
        }
    }
}

async fn shared_limit_on(profile: Profile) {
    let stack = Stack::new(profile).await;
    let env = [
        ("RATE_LIMIT_WINDOW_SECS", "30"),
        ("RATE_LIMIT_TOKEN_WRITES", "40"),
    ];
    let a = stack.spawn("api", &env).await;
    let b = stack.spawn("api", &env).await;
    let token = a.create_app("shared").await;
    let path = format!("/applications/{token}/chats");
    // 120 writes, alternating between the two processes, 8 at a time.
    let started = Instant::now();
    let mut accepted = 0;
    for round in 0..15 {
        let sends = (0..8).map(|i| {
            let app = if (round + i) % 2 == 0 { &a } else { &b };
            app.post_json(&path, json!({}))
        });
        for r in futures::future::join_all(sends).await {
            match r.status() {
                StatusCode::CREATED => accepted += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("unexpected {other}"),
            }
        }
    }
    // The window refills 40 per 30 s: at most one more per 0.75 s passed.
    let refilled = (started.elapsed().as_secs_f64() / 0.75).ceil() as usize;
    assert!(
        (40..=40 + refilled).contains(&accepted),
        "accepted {accepted} of 120 across two processes (refill allowance {refilled})"
    );
    // The limits are kept under a digest of the token: reading Redis's
    // keyspace gives no one a token.
    let Some(redis) = stack.redis() else {
        return stack.cleanup().await;
    };
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}rl:*", stack.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        keys.iter().any(|k| k.contains(":w:t:")),
        "no token limit in Redis: {keys:?}"
    );
    assert!(
        keys.iter().all(|k| !k.contains(&token)),
        "a limit key holds the token: {keys:?}"
    );
    stack.cleanup().await;
}

/// A request body sent slowly: `chunks` pieces, `gap` apart.
fn slow_body(chunks: usize, gap: Duration) -> reqwest::Body {
    let stream = futures::stream::unfold(0, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(gap).await;
        let piece = if i == 0 {
            "{\"name\":\""
        } else if i + 1 == chunks {
            "\"}"
        } else {
            "x"
        };
        Some((Ok::<_, std::io::Error>(piece.to_owned()), i + 1))
    });
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_concurrency_cap_requests_are_shed_and_health_stays_up() {
    let stack = Stack::new(Profile::Embedded).await;
    let cap = 2;
    let app = stack
        .spawn(
            "api",
            &[
                ("MAX_CONCURRENT_REQUESTS", "2"),
                ("REQUEST_TIMEOUT_MS", "1500"),
            ],
        )
        .await;
    let client = reqwest::Client::new();
    let url = app.url("/applications");
    // 10 × cap requests whose bodies take about 1 s to arrive.
    let slow = (0..10 * cap).map(|_| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(slow_body(5, Duration::from_millis(200)))
            .send()
    });
    let burst = tokio::spawn(futures::future::join_all(slow));
    // Health answers at once throughout.
    let mut health_checks = 0;
    while !burst.is_finished() {
        let started = Instant::now();
        let r = client
            .get(format!("{}/health/ready", app.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "health stalled"
        );
        health_checks += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let responses = burst.await.unwrap();
    let mut created = 0;
    let mut shed = 0;
    for r in responses {
        let r = r.unwrap();
        match r.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(number(&r, "retry-after"), 1);
                shed += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(created >= 1 && created <= cap, "created {created}");
    assert_eq!(created + shed, 10 * cap);
    assert!(health_checks >= 5, "health was checked during the burst");

    // A body slower than the request timeout is cut off with a 503.
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .body(slow_body(4, Duration::from_millis(700)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(number(&r, "retry-after"), 1);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_response_carries_a_request_id() {
    let stack = Stack::new(Profile::Embedded).await;
    let app = stack.spawn("serve", &[]).await;
    let client = reqwest::Client::new();
    let mut seen = std::collections::HashSet::new();
    for path in [
        "/api/v1/applications/nope",
        "/health/ready",
        "/metrics",
        "/admin",
        "/nowhere",
    ] {
        let r = client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(!id.is_empty(), "{path}");
        assert!(seen.insert(id), "a fresh id for {path}");
    }
    let r = client
        .get(format!("{}/health/live", app.base))
        .header("x-request-id", "client-chosen.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-chosen.1");
    let r = client
        .get(format!("{}/health/live", app.base))
        .header("x-request-id", "not acceptable!")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "not acceptable!");
    stack.cleanup().await;
}

/// A browser preflight from `origin` to the application list.
async fn preflight(app: &common::App, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, app.url("/applications"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_is_off_by_default_and_opens_only_to_configured_origins() {
    let stack = Stack::new(Profile::Embedded).await;
    let closed = stack.spawn("api", &[]).await;
    let r = preflight(&closed, "https://app.example").await;
    assert!(r.headers().get("access-control-allow-origin").is_none());

    let open = stack
        .spawn(
            "api",
            &[(
                "CORS_ALLOWED_ORIGINS",
                "https://app.example,https://b.example",
            )],
        )
        .await;
    let r = preflight(&open, "https://app.example").await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        r.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let r = preflight(&open, "https://evil.example").await;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // A real request from an allowed origin may read the request id.
    let r = reqwest::Client::new()
        .get(open.url("/applications/nope"))
        .header("origin", "https://b.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://b.example"
    );
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_slow_to_send_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::new(Profile::Embedded).await;
    let app = stack
        .spawn("api", &[("HEADER_READ_TIMEOUT_MS", "500")])
        .await;
    let addr = app.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Half a request, and then nothing.
    socket
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is still open after 5 s");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
    // A prompt client on a fresh connection is served as usual.
    let r = reqwest::get(format!("{}/health/live", app.base))
        .await
        .unwrap();
    assert!(r.status().is_success());
    stack.cleanup().await;
}
