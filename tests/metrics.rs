//! `GET /metrics`: request, queue-depth, bulk-write and lag series move as
//! work is queued and drained, on the API's port and on a worker's
//! `METRICS_PORT`.
mod common;

use std::time::{Duration, Instant};

use common::{App, Stack, free_port, profiles};

/// The value of the sample `name{labels…}`, if the text has it.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn scrape(http: &reqwest::Client, url: &str) -> Option<String> {
    let r = http.get(url).send().await.ok()?;
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    r.text().await.ok()
}

async fn wait_for_sample(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    labels: &[(&str, &str)],
    done: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(http, url).await.unwrap_or_default();
        if let Some(v) = sample(&text, name, labels)
            && done(v)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} never reached its value at {url}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const MESSAGES: usize = 20;

#[tokio::test(flavor = "multi_thread")]
async fn queue_depth_and_lag_series_move_as_work_is_queued_and_drained() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        // Split roles index only into a search server they share: the
        // emulator when CI has it.
        let mut emulator = None;
        let mut search: Vec<(&str, String)> = Vec::new();
        if std::env::var("OSMEM_SERVER").is_ok() {
            let (url, child) = common::search::start_emulator();
            emulator = Some(child);
            search.push(("ELASTICSEARCH_URL", url));
        }
        let env: Vec<(&str, &str)> = search.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let api: App = stack.spawn("api", &env).await;
        let api_metrics = format!("{}/metrics", api.base);
        let token = api.create_app("metrics").await;
        let chat = api.create_chat(&token).await;
        for i in 0..MESSAGES {
            api.create_queued_message(&token, chat, &format!("m{i}"))
                .await;
        }
        let messages = [("queue", "messages"), ("state", "ready")];
        let text = scrape(&api.http, &api_metrics).await.unwrap();
        assert_eq!(
            sample(&text, "chat_queue_jobs", &messages),
            Some(MESSAGES as f64),
            "with no worker, every message waits:\n{text}"
        );
        let posts = [
            ("http_request_method", "POST"),
            (
                "http_route",
                "/api/v1/applications/{token}/chats/{number}/messages",
            ),
            ("http_response_status_code", "201"),
        ];
        assert_eq!(
            sample(&text, "http_server_request_duration_seconds_count", &posts),
            Some(MESSAGES as f64),
            "{text}"
        );
        let r = api.get("/applications/nope").await;
        assert_eq!(r.status(), 404);

        let port = free_port();
        let port = port.to_string();
        let mut worker_env = env.clone();
        worker_env.push(("METRICS_PORT", &port));
        let _worker = stack.spawn("worker", &worker_env).await;
        let worker_metrics = format!("http://127.0.0.1:{port}/metrics");
        // Ready drops to 0 at the claim, done reaches 20 at the acks.
        let done = [("queue", "messages"), ("state", "done")];
        wait_for_sample(&api.http, &api_metrics, "chat_queue_jobs", &done, |v| {
            v == MESSAGES as f64
        })
        .await;
        let text = scrape(&api.http, &api_metrics).await.unwrap();
        assert_eq!(sample(&text, "chat_queue_jobs", &messages), Some(0.0));
        assert_eq!(
            sample(
                &text,
                "http_server_request_duration_seconds_count",
                &[
                    ("http_route", "/api/v1/applications/{token}"),
                    ("http_response_status_code", "404"),
                ],
            ),
            Some(1.0),
            "a 404 is labelled with its route template, not the token:\n{text}"
        );

        // The worker's own series: lags to the database and to the index.
        let persisted = wait_for_sample(
            &api.http,
            &worker_metrics,
            "chat_write_lag_seconds_count",
            &[("stage", "persisted")],
            |v| v >= (MESSAGES + 1) as f64,
        )
        .await;
        assert_eq!(
            persisted,
            (MESSAGES + 1) as f64,
            "the chat and every message"
        );
        if emulator.is_some() {
            wait_for_sample(
                &api.http,
                &worker_metrics,
                "chat_write_lag_seconds_count",
                &[("stage", "indexed")],
                |v| v >= MESSAGES as f64,
            )
            .await;
        }
        let text = scrape(&api.http, &worker_metrics).await.unwrap();
        if emulator.is_none() {
            assert!(
                sample(
                    &text,
                    "chat_write_lag_seconds_count",
                    &[("stage", "indexed")]
                )
                .is_none_or(|n| n == 0.0),
                "a worker with no search index indexes nothing:\n{text}"
            );
        }
        assert!(
            sample(
                &text,
                "chat_bulk_write_duration_seconds_count",
                &[("queue", "messages"), ("outcome", "ok")]
            )
            .is_some_and(|n| n >= 1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "chat_batch_rows_sum", &[("queue", "messages")]),
            Some(MESSAGES as f64)
        );
        if let Some(mut child) = emulator {
            let _ = child.kill();
        }
        stack.cleanup().await;
    }
}
