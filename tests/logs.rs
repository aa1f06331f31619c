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
