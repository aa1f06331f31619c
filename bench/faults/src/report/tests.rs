use super::*;

fn window(started: f64, ended: f64, background: bool) -> Window {
    Window {
        name: String::new(),
        started,
        ended: Some(ended),
        note: String::new(),
        tag: if background {
            Tag::Background
        } else {
            Tag::Fault
        },
    }
}

fn failure(at: f64) -> Failure {
    Failure {
        at,
        class: "503".into(),
        api: 0,
    }
}

#[test]
fn the_innermost_fault_takes_the_blame() {
    let windows = [
        window(10.0, 130.0, false),
        window(15.0, 15.5, false),
        window(7.0, 140.0, true),
    ];
    let fails = [failure(16.0), failure(60.0), failure(135.0), failure(200.0)];
    let (per, outside) = attribute(&windows, &fails, 1.0);
    assert_eq!(per, vec![1, 1, 1]);
    assert_eq!(outside, 1);
}

#[test]
fn a_clean_report_has_no_failures_and_one_machine_line() {
    let report = Report {
        accepted: 10,
        persisted: 10,
        listed: 10,
        indexed: Some(10),
        search_alias: Some(true),
        ..Report::default()
    };
    assert!(report.failures().is_empty(), "{report}");
    let text = report.to_string();
    assert_eq!(text.lines().filter(|l| l.starts_with("FAULTS ")).count(), 1);
    assert!(text.lines().last().unwrap().contains(" failures=0"));
}

#[test]
fn every_violation_is_named() {
    let report = Report {
        accepted: 10,
        listed: 9,
        lost: 1,
        indexed: Some(5),
        search_alias: Some(false),
        faults: vec![FaultRow {
            name: "redis SIGKILL #1".into(),
            started_at: 1.0,
            ended_at: 2.0,
            accepted_during: 0,
            retries: 0,
            resumed_after: None,
            searchable_after: None,
            note: String::new(),
            background: false,
        }],
        ..Report::default()
    };
    let failures = report.failures().join("\n");
    for needle in ["lost", "5 of 9", "alias", "after redis SIGKILL #1"] {
        assert!(failures.contains(needle), "{needle} in {failures}");
    }
}
