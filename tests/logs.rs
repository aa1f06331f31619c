//! Structured logs: `LOG_FORMAT=json` writes one JSON object per line, and
//! `RUST_LOG` filters what is written.
mod common;

use std::time::{Duration, Instant};

use common::{Profile, Stack};
use serde_json::Value;

async fn log_lines(path: &std::path::Path, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if until(&lines) {
            return lines;
        }
        assert!(Instant::now() < deadline, "log never got there:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line_and_rust_log_filters_them() {
    let stack = Stack::new(Profile::Embedded).await;
    let json_log = stack.data_dir.join("json.log");
    let app = stack
        .spawn_logged(
            "serve",
            &[("LOG_FORMAT", "json"), ("RUST_LOG", "info")],
            Some(&json_log),
        )
        .await;
    app.create_app("logs").await;
    let lines = log_lines(&json_log, |l| l.iter().any(|l| l.contains("listening"))).await;
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v.get(field).is_some(), "{field} missing in {line}");
        }
    }
    let listening: Value =
        serde_json::from_str(lines.iter().find(|l| l.contains("listening")).unwrap()).unwrap();
    assert_eq!(listening["level"], "INFO");
    assert!(
        listening["addr"].as_str().is_some(),
        "fields are top level: {listening}"
    );

    // The same process at RUST_LOG=warn writes no INFO line.
    app.kill9();
    let quiet_log = stack.data_dir.join("quiet.log");
    let quiet = stack
        .spawn_logged(
            "serve",
            &[("LOG_FORMAT", "json"), ("RUST_LOG", "warn")],
            Some(&quiet_log),
        )
        .await;
    quiet.create_app("quiet").await;
    let text = std::fs::read_to_string(&quiet_log).unwrap_or_default();
    assert!(!text.contains("\"INFO\""), "{text}");
    stack.cleanup().await;
}

/// A log line written while a traced request is handled carries that
/// request's trace id (the access log line, at debug), whether or not the
/// trace is sampled: the id a client quotes finds its lines either way.
#[tokio::test(flavor = "multi_thread")]
async fn log_lines_inside_a_traced_request_carry_its_trace_id() {
    for format in ["json", "text"] {
        let stack = Stack::new(Profile::Embedded).await;
        let log = stack.data_dir.join("traced.log");
        // A collector that is not there: ids exist whether or not export works.
        let endpoint = format!("http://127.0.0.1:{}", common::free_port());
        let app = stack
            .spawn_logged(
                "serve",
                &[
                    ("LOG_FORMAT", format),
                    ("RUST_LOG", "warn,chat_api=debug"),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ],
                Some(&log),
            )
            .await;
        let token = app.create_app("traced").await;
        for flags in ["01", "00"] {
            let trace = uuid::Uuid::new_v4().simple().to_string();
            let r = app
                .http
                .get(app.url(&format!("/applications/{token}")))
                .header(
                    "traceparent",
                    format!("00-{trace}-00f067aa0ba902b7-{flags}"),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-trace-id"], trace.as_str(), "flags {flags}");
            let lines = log_lines(&log, |l| l.iter().any(|l| l.contains(&trace))).await;
            let line = lines.iter().find(|l| l.contains(&trace)).unwrap();
            match format {
                "json" => {
                    let v: Value = serde_json::from_str(line).unwrap();
                    assert_eq!(v["trace_id"], trace.as_str(), "{line}");
                    assert_eq!(v["span_id"].as_str().map(str::len), Some(16), "{line}");
                }
                _ => assert!(
                    line.contains(&format!("trace_id={trace} span_id=")),
                    "{line}"
                ),
            }
        }
        stack.cleanup().await;
    }
}
