//! SIGTERM during a steady write load: the process exits 0 within its
//! deadline, no request it accepted is cut off, and every write that got
//! a 201 is persisted exactly once once another process runs the worker.
mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{Stack, profiles};
use serde_json::json;

const WRITERS: usize = 8;
const CHATS: i64 = 4;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_write_load_loses_nothing_and_cuts_off_nothing() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack
            .spawn("serve", &[("SHUTDOWN_TIMEOUT_SECS", "20")])
            .await;
        let token = app.create_app("load").await;
        for _ in 0..CHATS {
            app.create_chat(&token).await;
        }
        // Each writer posts until the server stops answering, and keeps the
        // bodies that got a 201, per chat.
        let accepted: Arc<Mutex<HashMap<i64, Vec<String>>>> = Arc::default();
        let cut_off = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (url, accepted, cut_off) = (
                    app.url(&format!("/applications/{token}/chats")),
                    accepted.clone(),
                    cut_off.clone(),
                );
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    for i in 0.. {
                        let chat = (w as i64 + i) % CHATS + 1;
                        let body = format!("writer {w} message {i}");
                        let sent = client
                            .post(format!("{url}/{chat}/messages"))
                            .json(&json!({ "body": body }))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == 201 => {
                                accepted.lock().unwrap().entry(chat).or_default().push(body);
                            }
                            Ok(r) => panic!("{} while stopping", r.status()),
                            // The listener is closed: nothing was accepted.
                            Err(e) if e.is_connect() => return,
                            Err(e) => {
                                let mut chain = format!("{e}");
                                let mut source = std::error::Error::source(&e);
                                while let Some(cause) = source {
                                    chain.push_str(&format!(": {cause}"));
                                    source = cause.source();
                                }
                                cut_off.lock().unwrap().push(chain);
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let stopping = Instant::now();
        assert!(
            app.terminate(Duration::from_secs(20)).await,
            "{profile:?}: exit 0 within the deadline"
        );
        let took = stopping.elapsed();
        for w in writers {
            w.await.unwrap();
        }
        assert!(
            cut_off.lock().unwrap().is_empty(),
            "{profile:?}: accepted requests cut off: {:?}",
            cut_off.lock().unwrap()
        );
        let accepted = accepted.lock().unwrap().clone();
        let total: usize = accepted.values().map(Vec::len).sum();
        assert!(
            total > 50,
            "{profile:?}: only {total} writes before the stop"
        );

        let again = stack.spawn("serve", &[]).await;
        for (chat, bodies) in &accepted {
            let path = format!("/applications/{token}/chats/{chat}/messages");
            let listed = again
                .wait_listed(&path, bodies.len(), Duration::from_secs(60))
                .await;
            let mut got: Vec<&str> = listed.iter().map(|m| m["body"].as_str().unwrap()).collect();
            let mut want: Vec<&str> = bodies.iter().map(String::as_str).collect();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(
                got, want,
                "{profile:?}: chat {chat} holds each 201 exactly once"
            );
        }
        eprintln!("{profile:?}: {total} writes accepted; stopped in {took:?}");
        stack.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_outlasts_the_deadline_does_not_hold_the_exit() {
    let stack = Stack::new(common::Profile::Embedded).await;
    let app = stack
        .spawn(
            "serve",
            &[
                ("SHUTDOWN_TIMEOUT_SECS", "1"),
                ("REQUEST_TIMEOUT_MS", "60000"),
            ],
        )
        .await;
    // A body that would take 30 s to arrive.
    let body = futures::stream::unfold(0, |i| async move {
        if i == 30 {
            return None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some((
            Ok::<_, std::io::Error>(if i == 0 { "{\"name\":\"" } else { "x" }),
            i + 1,
        ))
    });
    let slow = reqwest::Client::new()
        .post(app.url("/applications"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let slow = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    assert!(app.terminate(Duration::from_secs(10)).await, "exit 0");
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "stopped after {took:?}, deadline 1 s"
    );
    assert!(
        slow.await.unwrap().is_err(),
        "the unfinished request was cut at the deadline"
    );
    stack.cleanup().await;
}
