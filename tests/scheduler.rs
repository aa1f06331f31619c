//! The scheduler: exact counts within two intervals, one run per tick
//! however many schedulers race, incremental recounts that touch only the
//! marked parents, and `chat recount`.
mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use chat_store::{
    model::{ChatRow, MessageRow},
    repo::{applications, counts},
};
use common::{App, Stack, profiles, wait_for};
use futures::future::join_all;
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult, Statement};
use serde_json::json;

const INTERVAL_SECS: u64 = 2;

/// A scheduler that runs the incremental counts every second, and nothing
/// else within a test's time.
const ONLY_COUNTS_EVERY_SECOND: [(&str, &str); 4] = [
    ("COUNTS_INTERVAL_SECS", "1"),
    ("COUNTS_FULL_INTERVAL_SECS", "3600"),
    ("HOUSEKEEPING_INTERVAL_SECS", "3600"),
    ("SEARCH_DRIFT_INTERVAL_SECS", "0"),
];

/// Posts `per_chat[i]` messages to chat i+1 of `token`, concurrently.
async fn post_messages(app: &App, token: &str, per_chat: &[usize]) {
    let posts = per_chat.iter().enumerate().flat_map(|(i, &n)| {
        (0..n).map(move |m| async move {
            let r = app
                .post_json(
                    &format!("/applications/{token}/chats/{}/messages", i + 1),
                    json!({ "body": format!("message {m}") }),
                )
                .await;
            assert_eq!(r.status(), 201);
        })
    });
    join_all(posts).await;
}

/// Whether every count the API shows for `token` is what was written:
/// `chats_count` on the application, and `messages_count` on each chat,
/// both in the list and on its own.
async fn counts_are_exact(app: &App, token: &str, per_chat: &[usize]) -> bool {
    let application = app.get_json(&format!("/applications/{token}")).await;
    if application["chats_count"] != per_chat.len() {
        return false;
    }
    let chats = app.list_all(&format!("/applications/{token}/chats")).await;
    if chats.len() != per_chat.len() {
        return false;
    }
    for (chat, &n) in chats.iter().zip(per_chat) {
        if chat["messages_count"] != n {
            return false;
        }
        let one = app
            .get_json(&format!("/applications/{token}/chats/{}", chat["number"]))
            .await;
        if one["messages_count"] != n {
            return false;
        }
    }
    true
}

/// Waits until the counts of every app are exact; returns how long that
/// took, or panics at `within`.
async fn wait_exact(app: &App, expected: &[(String, Vec<usize>)], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut exact = true;
        for (token, per_chat) in expected {
            exact &= counts_are_exact(app, token, per_chat).await;
        }
        if exact {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "counts still wrong {within:?} after the last write"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_are_exact_within_two_intervals_of_the_last_write() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let interval = INTERVAL_SECS.to_string();
        let app = stack
            .spawn("serve", &[("COUNTS_INTERVAL_SECS", interval.as_str())])
            .await;
        // Two intervals, plus a second for the write to be persisted.
        let bound = Duration::from_secs(2 * INTERVAL_SECS + 1);

        let mut expected = Vec::new();
        for (name, per_chat) in [("a", vec![7, 0, 12]), ("b", vec![5, 3])] {
            let token = app.create_app(name).await;
            for _ in &per_chat {
                app.create_chat(&token).await;
            }
            post_messages(&app, &token, &per_chat).await;
            expected.push((token, per_chat));
        }
        let took = wait_exact(&app, &expected, bound).await;
        println!("{profile:?}: counts exact {took:?} after the last write");

        // A second wave, after runs have already consumed the first: new
        // messages in an old chat, and a new chat.
        let (token, per_chat) = &mut expected[1];
        app.create_chat(token).await;
        post_messages(&app, token, &[4, 0, 6]).await;
        per_chat[0] += 4;
        per_chat.push(6);
        let took = wait_exact(&app, &expected, bound).await;
        println!("{profile:?}: second wave exact {took:?} after its last write");
        stack.cleanup().await;
    }
}

#[derive(FromQueryResult, Debug)]
struct Run {
    tick_at: i64,
    owner: String,
    outcome: String,
}

async fn runs_of(db: &DatabaseConnection, task: &str) -> Vec<Run> {
    Run::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT tick_at, owner, outcome FROM scheduler_runs WHERE task = ? ORDER BY tick_at",
        [task.into()],
    ))
    .all(db)
    .await
    .unwrap()
}

/// What each scheduler's log says it did per tick of `counts`: ran it, or
/// found it taken.
#[derive(Default, Debug, Clone, Copy)]
struct TickLog {
    ran: usize,
    lost: usize,
}

fn tick_logs(logs: &[&Path]) -> BTreeMap<i64, TickLog> {
    let mut out: BTreeMap<i64, TickLog> = BTreeMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.contains("task=\"counts\"") || l.contains("task=counts"))
        {
            let Some(tick) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("tick="))
                .and_then(|t| t.parse::<i64>().ok())
            else {
                continue;
            };
            let entry = out.entry(tick).or_default();
            if line.contains("run finished") {
                entry.ran += 1;
            } else if line.contains("another scheduler has this tick") {
                entry.lost += 1;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn three_schedulers_run_each_tick_once_and_survive_a_killed_one() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        // Apply migrations first, so the schedulers start together.
        assert!(stack.run_chat(&["migrate"]).status.success());
        let mut env = ONLY_COUNTS_EVERY_SECOND.to_vec();
        env.push(("RUST_LOG", "chat_scheduler=debug"));
        let logs: Vec<_> = ["a", "b", "c", "victim"]
            .iter()
            .map(|n| stack.data_dir.join(format!("{n}.log")))
            .collect();
        let mut schedulers = Vec::new();
        for log in &logs[..3] {
            schedulers.push(stack.spawn_logged("scheduler", &env, Some(log)).await);
        }
        let db = stack.db().await;

        // Phase 1: at least 12 ticks with all three racing.
        wait_for("12 ticks", Duration::from_secs(60), async || {
            let runs = runs_of(&db, "counts").await;
            (runs.len() >= 12).then_some(())
        })
        .await;
        let runs = runs_of(&db, "counts").await;
        let ticks: Vec<i64> = runs.iter().map(|r| r.tick_at).collect();
        let first = ticks[0];
        assert_eq!(
            ticks,
            (first..first + ticks.len() as i64).collect::<Vec<_>>(),
            "every tick has exactly one run record, with no gaps"
        );
        // The newest tick's run may still be under way when read.
        let (newest, settled) = runs.split_last().unwrap();
        assert!(settled.iter().all(|r| r.outcome == "ok"), "{runs:?}");
        assert!(
            ["ok", "running"].contains(&newest.outcome.as_str()),
            "{runs:?}"
        );
        // Give the losers of the newest tick time to log it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let log_paths: Vec<&Path> = logs[..3].iter().map(|p| p.as_path()).collect();
        let per_tick = tick_logs(&log_paths);
        // The first two ticks may fall before every process was up.
        for tick in &ticks[2..] {
            let seen = per_tick.get(tick).copied().unwrap_or_default();
            assert_eq!(
                (seen.ran, seen.lost),
                (1, 2),
                "tick {tick}: exactly one scheduler ran it and two found it taken"
            );
        }
        let winners: std::collections::BTreeSet<&str> =
            runs.iter().map(|r| r.owner.as_str()).collect();
        println!(
            "{profile:?}: {} ticks, each run once; winners {winners:?}",
            ticks.len()
        );

        // Phase 2: a scheduler dies in the middle of a run. The others are
        // paused for a moment so that the victim certainly wins a tick.
        let mut victim_env = env.to_vec();
        victim_env.push(("SCHEDULER_HOLD_MS", "5000"));
        let victim = stack
            .spawn_logged("scheduler", &victim_env, Some(&logs[3]))
            .await;
        let victim_pid = format!(":{}", victim.pid().unwrap());
        wait_for("the victim to start", Duration::from_secs(30), async || {
            let log = std::fs::read_to_string(&logs[3]).unwrap_or_default();
            log.contains("scheduler started").then_some(())
        })
        .await;
        for s in &schedulers {
            s.signal("STOP");
        }
        let killed_tick = wait_for("the victim's run", Duration::from_secs(10), async || {
            runs_of(&db, "counts")
                .await
                .into_iter()
                .find(|r| r.owner.ends_with(&victim_pid) && r.outcome == "running")
                .map(|r| r.tick_at)
        })
        .await;
        for s in &schedulers {
            s.signal("CONT");
        }
        victim.kill9();

        // The next tick runs normally, and the dead run is marked abandoned
        // instead of blocking anything.
        let after = wait_for(
            "normal ticks after the kill",
            Duration::from_secs(30),
            async || {
                let runs = runs_of(&db, "counts").await;
                let abandoned = runs
                    .iter()
                    .any(|r| r.tick_at == killed_tick && r.outcome == "abandoned");
                let later: Vec<Run> = runs
                    .into_iter()
                    .filter(|r| r.tick_at > killed_tick)
                    .collect();
                (abandoned && later.len() >= 3).then_some(later)
            },
        )
        .await;
        assert_eq!(after[0].tick_at, killed_tick + 1, "the very next tick ran");
        let later_ticks: Vec<i64> = after.iter().map(|r| r.tick_at).collect();
        assert_eq!(
            later_ticks,
            (killed_tick + 1..killed_tick + 1 + after.len() as i64).collect::<Vec<_>>()
        );
        assert!(
            after
                .iter()
                .all(|r| r.outcome == "ok" || r.outcome == "running"),
            "{after:?}"
        );
        println!(
            "{profile:?}: killed mid-run at tick {killed_tick}; tick {} ran normally",
            killed_tick + 1
        );
        stack.cleanup().await;
    }
}

fn row_time() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn chat(app: i64, number: i64) -> ChatRow {
    ChatRow {
        application_id: app,
        number,
        name: None,
        version: 1,
        created_at: row_time(),
        updated_at: row_time(),
    }
}

fn message(app: i64, chat: i64, number: i64) -> MessageRow {
    MessageRow {
        application_id: app,
        chat_number: chat,
        number,
        body: format!("m{number}"),
        version: 1,
        created_at: row_time(),
        updated_at: row_time(),
    }
}

async fn stored_count(db: &DatabaseConnection, app: i64, chat: i64) -> i64 {
    #[derive(FromQueryResult)]
    struct C {
        messages_count: i64,
    }
    C::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT messages_count FROM chats WHERE application_id = ? AND number = ?",
        [app.into(), chat.into()],
    ))
    .one(db)
    .await
    .unwrap()
    .unwrap()
    .messages_count
}

async fn corrupt(db: &DatabaseConnection, app: i64, chats: &[i64]) {
    for chat in chats {
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "UPDATE chats SET messages_count = 999 WHERE application_id = ? AND number = ?",
            [app.into(), (*chat).into()],
        ))
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_recount_touches_only_the_marked_chats() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        assert!(stack.run_chat(&["migrate"]).status.success());
        let db = stack.db().await;
        let app = applications::create(&db, "counts").await.unwrap().id;
        let chats: Vec<ChatRow> = (1..=50).map(|n| chat(app, n)).collect();
        chat_store::repo::chats::upsert_all(&db, &chats)
            .await
            .unwrap();
        let messages: Vec<MessageRow> = (1..=50)
            .flat_map(|c| (1..=c).map(move |n| message(app, c, n)))
            .collect();
        for chunk in messages.chunks(400) {
            chat_store::repo::messages::upsert_all(&db, chunk)
                .await
                .unwrap();
        }

        // The writes marked every chat and the application.
        let first = counts::recount_dirty(&db, 10_000).await.unwrap();
        assert_eq!(first.chats_checked, 50);
        assert_eq!(
            first.chats_repaired, 50,
            "chat n holds n messages; 0 was stored"
        );
        assert_eq!(
            (first.applications_checked, first.applications_repaired),
            (1, 1)
        );
        assert_eq!(counts::pending_marks(&db).await.unwrap(), 0);
        assert_eq!(stored_count(&db, app, 7).await, 7);

        // Two counts drift behind the marks' back; only one is marked.
        corrupt(&db, app, &[3, 4]).await;
        counts::mark_chats(&db, [(app, 3)]).await.unwrap();
        let second = counts::recount_dirty(&db, 10_000).await.unwrap();
        assert_eq!((second.chats_checked, second.chats_repaired), (1, 1));
        assert_eq!(second.applications_checked, 0);
        assert_eq!(stored_count(&db, app, 3).await, 3);
        assert_eq!(
            stored_count(&db, app, 4).await,
            999,
            "an unmarked chat is not read"
        );

        // A mark beyond what a run read survives it.
        counts::mark_chats(&db, [(app, 5)]).await.unwrap();
        counts::mark_chats(&db, [(app, 6)]).await.unwrap();
        let partial = counts::recount_marked(&db, 1, None).await.unwrap();
        assert_eq!(partial.marks, 1);
        assert_eq!(counts::pending_marks(&db).await.unwrap(), 1);

        // `chat recount` (the full recount) repairs what no mark named.
        let out = stack.run_chat(&["recount"]);
        assert!(out.status.success(), "{out:?}");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("recounted 50 chats (1 repaired) and 1 applications (0 repaired)"),
            "{said}"
        );
        assert_eq!(stored_count(&db, app, 4).await, 4);
        let full = counts::recount_all(&db, 7).await.unwrap();
        assert_eq!((full.chats_checked, full.repaired()), (50, 0));
        stack.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mark_that_commits_after_a_later_one_was_read_is_not_lost() {
    // InnoDB gives a mark its id when it is inserted, not when it commits:
    // here mark X (lower id) commits after mark Y was read, which is what
    // two batch writes in flight do. SQLite has one writer, whose ids
    // follow commit order, so only MySQL can show it.
    for profile in profiles() {
        if profile != common::Profile::Distributed {
            continue;
        }
        let stack = Stack::new(profile).await;
        assert!(stack.run_chat(&["migrate"]).status.success());
        let db = stack.db().await;
        let app = applications::create(&db, "late marks").await.unwrap().id;
        chat_store::repo::chats::upsert_all(&db, &[chat(app, 1), chat(app, 2)])
            .await
            .unwrap();
        let rows: Vec<MessageRow> = (1..=3).map(|n| message(app, 1, n)).collect();
        chat_store::repo::messages::upsert_all(&db, &rows)
            .await
            .unwrap();
        counts::recount_dirty(&db, 10_000).await.unwrap();
        assert_eq!(stored_count(&db, app, 1).await, 3);
        corrupt(&db, app, &[1]).await;

        use sea_orm::TransactionTrait;
        let late = db.begin().await.unwrap();
        counts::mark_chats(&late, [(app, 1)]).await.unwrap();
        counts::mark_chats(&db, [(app, 2)]).await.unwrap();
        let run = tokio::spawn({
            let db = db.clone();
            async move { counts::recount_dirty(&db, 10_000).await.unwrap() }
        });
        // Long enough for the run to read mark Y (and, deleting by id
        // range, to wait on X's row lock).
        tokio::time::sleep(Duration::from_millis(500)).await;
        late.commit().await.unwrap();
        let first = run.await.unwrap();
        assert_eq!(first.marks, 1, "the run read only the committed mark");

        let second = counts::recount_dirty(&db, 10_000).await.unwrap();
        assert_eq!(
            (second.marks, second.chats_repaired),
            (1, 1),
            "the late mark is read by the next run"
        );
        assert_eq!(stored_count(&db, app, 1).await, 3);
        stack.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chat_persisted_after_its_messages_gets_their_count() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        assert!(stack.run_chat(&["migrate"]).status.success());
        let db = stack.db().await;
        let app = applications::create(&db, "late chat").await.unwrap().id;
        let rows: Vec<MessageRow> = (1..=4).map(|n| message(app, 1, n)).collect();
        chat_store::repo::messages::upsert_all(&db, &rows)
            .await
            .unwrap();
        // The messages' marks are consumed while their chat has no row.
        let early = counts::recount_dirty(&db, 10_000).await.unwrap();
        assert_eq!((early.marks, early.chats_repaired), (1, 0));
        chat_store::repo::chats::upsert_all(&db, &[chat(app, 1)])
            .await
            .unwrap();
        counts::recount_dirty(&db, 10_000).await.unwrap();
        assert_eq!(
            stored_count(&db, app, 1).await,
            4,
            "{profile:?}: the chat's own write marks it"
        );
        stack.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_consumes_every_mark_that_existed_when_it_started() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        assert!(stack.run_chat(&["migrate"]).status.success());
        let db = stack.db().await;
        let app = applications::create(&db, "many marks").await.unwrap().id;
        for round in 0..25 {
            counts::mark_chats(&db, (1..=100).map(|c| (app, c + round)))
                .await
                .unwrap();
        }
        // Each statement's 100 marks are padded to 128 with repeats of its
        // last (`repo::sizes`).
        let written = counts::pending_marks(&db).await.unwrap();
        assert_eq!(written, 25 * 128);
        // Small rounds: the run goes on until the marks are gone, however
        // many rounds that takes.
        let run = counts::recount_dirty(&db, 64).await.unwrap();
        assert_eq!(run.marks, written);
        assert_eq!(counts::pending_marks(&db).await.unwrap(), 0);
        stack.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_task_runs_on_its_schedule_and_leaves_a_record() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack
            .spawn(
                "serve",
                &[
                    ("COUNTS_INTERVAL_SECS", "1"),
                    ("COUNTS_FULL_INTERVAL_SECS", "2"),
                    ("HOUSEKEEPING_INTERVAL_SECS", "1"),
                    ("SEARCH_DRIFT_INTERVAL_SECS", "2"),
                    ("JOBS_DONE_RETENTION_SECS", "1"),
                ],
            )
            .await;
        let token = app.create_app("runs").await;
        let chat = app.create_chat(&token).await;
        for i in 0..5 {
            app.create_queued_message(&token, chat, &format!("hello {i}"))
                .await;
        }
        let ok = |runs: &[serde_json::Value],
                  task: &str,
                  detail: &dyn Fn(&serde_json::Value) -> bool| {
            runs.iter()
                .any(|r| r["task"] == task && r["outcome"] == "ok" && detail(&r["detail"]))
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let runs = loop {
            let runs = app.get_root_json("/admin/api/runs").await;
            let runs = runs.as_array().unwrap().clone();
            // counts_full may repair a count first, so ask counts only to
            // have consumed the marks the writes left.
            let all = ok(&runs, "counts", &|d| d["marks"].as_u64() >= Some(1))
                && ok(&runs, "counts_full", &|d| d["chats_checked"].as_u64() >= Some(1))
                // The done records of the message jobs, past their 1 s.
                && ok(&runs, "housekeeping", &|d| d["messages"]["done"].as_u64() >= Some(1))
                && ok(&runs, "search_drift", &|d| d["chats_checked"].as_u64() >= Some(1));
            if all {
                break runs;
            }
            assert!(
                Instant::now() < deadline,
                "{profile:?}: not every task has an ok run with work done: {runs:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let newest = &runs[0];
        for field in [
            "task",
            "tick_at",
            "owner",
            "started_at",
            "finished_at",
            "duration_ms",
            "rows_touched",
            "outcome",
        ] {
            assert!(
                !newest[field].is_null() || newest["outcome"] == "running",
                "{field} in {newest}"
            );
        }
        println!("{profile:?}: {} run records, newest {newest}", runs.len());

        // The operators see the same runs, and when each task is next due.
        let scheduler = app.get_admin_page("/admin/scheduler").await;
        for task in ["counts", "counts_full", "housekeeping", "search_drift"] {
            assert!(
                scheduler.contains(&format!("data-task=\"{task}\"")),
                "{task}"
            );
        }
        assert_eq!(scheduler.matches("next tick due").count(), 4);
        assert!(scheduler.contains("every 2 s"));
        let health = app.get_admin_page("/admin/health").await;
        assert!(health.contains("chats_checked"), "{health}");
        assert!(
            !health.contains("not run yet"),
            "every check has run: {health}"
        );
        stack.cleanup().await;
    }
}

/// SIGTERM in the middle of a run: the scheduler stops it (the next tick
/// repeats it) and exits at once, not at its shutdown deadline.
#[tokio::test(flavor = "multi_thread")]
async fn a_scheduler_stopped_during_a_run_exits_at_once() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        assert!(stack.run_chat(&["migrate"]).status.success());
        let mut env = ONLY_COUNTS_EVERY_SECOND.to_vec();
        // Every run takes a minute, and so would the deadline.
        env.extend([
            ("SCHEDULER_HOLD_MS", "60000"),
            ("SHUTDOWN_TIMEOUT_SECS", "60"),
        ]);
        let scheduler = stack.spawn("scheduler", &env).await;
        let db = stack.db().await;
        let tick = wait_for("a run in progress", Duration::from_secs(30), async || {
            runs_of(&db, "counts")
                .await
                .into_iter()
                .find(|r| r.outcome == "running")
                .map(|r| r.tick_at)
        })
        .await;
        let asked = Instant::now();
        assert!(
            scheduler.terminate(Duration::from_secs(10)).await,
            "{profile:?}: the scheduler did not exit within 10 s of SIGTERM"
        );
        println!("{profile:?}: exited {:?} after SIGTERM", asked.elapsed());
        let run = runs_of(&db, "counts")
            .await
            .into_iter()
            .find(|r| r.tick_at == tick)
            .unwrap();
        assert_ne!(
            run.outcome, "running",
            "{profile:?}: the stopped run is recorded"
        );
        stack.cleanup().await;
    }
}
