//! Hostile input gets a 4xx, never a 5xx, a hang or a broken pipe: tokens
//! no application could have, made-up search cursors, floods of words,
//! bodies far over the limit, bodies sent a byte at a time, and more
//! connections than the server keeps.
mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use chat_search::Cursor;
use common::{App, Stack, profiles};
use serde_json::{Value, json};

async fn assert_problem(r: reqwest::Response, status: u16) -> Value {
    let (got, url) = (r.status().as_u16(), r.url().to_string());
    let p: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{url}: {p}");
    assert_eq!(p["status"], status, "{url}: {p}");
    p
}

/// The address part of `app.base`, for raw connections.
fn address(app: &App) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn a_token_no_application_could_have_is_a_404_on_every_path() {
    // MySQL keeps tokens in an `ascii_bin` column and refuses to compare
    // other text with it ("illegal mix of collations").
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;
        for token in ["été", "日本", "x\u{0}y", "😀"] {
            let enc = url_encode(token);
            for path in [
                format!("/applications/{enc}"),
                format!("/applications/{enc}/chats"),
                format!("/applications/{enc}/chats/1"),
                format!("/applications/{enc}/chats/1/messages"),
                format!("/applications/{enc}/chats/1/messages/1"),
                format!("/applications/{enc}/chats/1/messages/search?q=hi"),
            ] {
                assert_problem(app.get(&path).await, 404).await;
            }
            let r = app
                .post_json(&format!("/applications/{enc}/chats"), json!({}))
                .await;
            assert_problem(r, 404).await;
            let r = app
                .post_json(
                    &format!("/applications/{enc}/chats/1/messages"),
                    json!({ "body": "hi" }),
                )
                .await;
            assert_problem(r, 404).await;
            let r = app
                .put_json(&format!("/applications/{enc}"), json!({ "name": "x" }))
                .await;
            assert_problem(r, 404).await;
        }
        stack.cleanup().await;
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn made_up_cursors_and_floods_of_words_are_refused() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;
        let token = app.create_app("hostile").await;
        let chat = app.create_chat(&token).await;
        app.create_message(&token, chat, "hello").await;
        let search = format!("/applications/{token}/chats/{chat}/messages/search");
        // A cursor's score travels as its bits: these are no search's.
        for bits in [0x7fc0_0000_u32, 0x7f80_0000, 0xff80_0000, 0x7fff_ffff] {
            let after = Cursor {
                score: f32::from_bits(bits),
                number: 5,
            }
            .encode();
            let r = app.get(&format!("{search}?q=hello&after={after}")).await;
            assert_problem(r, 400).await;
        }
        let words: Vec<String> = (0..33).map(|i| format!("w{i}")).collect();
        let r = app.get(&format!("{search}?q={}", words.join("+"))).await;
        let p = assert_problem(r, 422).await;
        assert!(p["detail"].as_str().unwrap().contains("at most 32"), "{p}");
        // Thousands of words, too, and one word's punctuation-split parts.
        let many = "a+".repeat(5_000);
        assert_problem(app.get(&format!("{search}?q={many}")).await, 422).await;
        let dotted = (0..40)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(".");
        assert_problem(app.get(&format!("{search}?q={dotted}")).await, 422).await;
        // 32 words are searched.
        let r = app
            .get(&format!("{search}?q={}", words[..32].join("+")))
            .await;
        assert_eq!(r.status(), 200);
        stack.cleanup().await;
    }
}

/// Sends a whole request (headers and body) before reading anything, as
/// Python's urllib does, and returns the status line it then reads.
fn send_then_read(addr: &str, head: &str, body: &[u8]) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(15)))?;
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or("").to_owned())
}

#[tokio::test]
async fn a_body_far_over_the_limit_gets_its_413_every_time() {
    let stack = Stack::new(common::Profile::Embedded).await;
    let app = stack.spawn("serve", &[]).await;
    let token = app.create_app("big").await;
    let chat = app.create_chat(&token).await;
    let addr = address(&app);
    let body = vec![b'x'; 2 * 1024 * 1024];
    let head = format!(
        "POST /api/v1/applications/{token}/chats/{chat}/messages HTTP/1.1\r\n\
         Host: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let results = tokio::task::spawn_blocking(move || {
        (0..12)
            .map(|_| send_then_read(&addr, &head, &body))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(line) => assert!(line.contains(" 413 "), "try {i}: {line:?}"),
            Err(e) => panic!("try {i}: the client saw {e} instead of the 413"),
        }
    }
    stack.cleanup().await;
}

#[tokio::test]
async fn a_slow_body_on_any_route_ends_at_its_deadline() {
    let stack = Stack::new(common::Profile::Embedded).await;
    let app = stack
        .spawn("serve", &[("REQUEST_TIMEOUT_MS", "1000")])
        .await;
    let addr = address(&app);
    for path in ["/admin/login", "/api/v1/applications"] {
        let addr = addr.clone();
        let (took, answer) = tokio::task::spawn_blocking(move || {
            let mut conn = TcpStream::connect(&addr).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nt"
            );
            conn.write_all(head.as_bytes()).unwrap();
            let started = Instant::now();
            // A byte now and then, never the whole body.
            let mut answer = Vec::new();
            let mut buf = [0u8; 1024];
            conn.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            while started.elapsed() < Duration::from_secs(10) {
                let _ = conn.write_all(b"x");
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        answer.extend_from_slice(&buf[..n]);
                        break;
                    }
                    Err(_) => continue,
                }
            }
            (
                started.elapsed(),
                String::from_utf8_lossy(&answer).into_owned(),
            )
        })
        .await
        .unwrap();
        assert!(
            took < Duration::from_secs(5),
            "{path}: the server still waited for the body after {took:?}"
        );
        let status = answer.lines().next().unwrap_or("");
        assert!(
            status.contains(" 408 ") || status.contains(" 400 ") || status.contains(" 503 "),
            "{path}: {status:?}"
        );
    }
    stack.cleanup().await;
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let stack = Stack::new(common::Profile::Embedded).await;
    let app = stack.spawn("serve", &[("MAX_CONNECTIONS", "4")]).await;
    let addr = address(&app);
    // Four idle connections take every slot.
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let live = format!("{}/health/live", app.base);
    assert!(
        http.get(&live).send().await.is_err(),
        "a fifth connection is not served while four are open"
    );
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(r) = http.get(&live).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "served again once they closed");
    }
    stack.cleanup().await;
}
