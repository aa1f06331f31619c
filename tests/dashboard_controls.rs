//! The dashboard's second round, over HTTP as an operator's browser or
//! script sees it: errors as pages, deep links kept through the login, a
//! logout that kills the cookie everywhere, search by the cut token and
//! by error text in any case, bulk actions recorded per job and marked in
//! the attempts, "retry now" and cancel, and pausing a queue across a
//! restart; and, on a private Redis that is stopped, an overview that says
//! which backend is down.
mod common;

use std::time::{Duration, Instant};

use common::{
    ADMIN_TOKEN, App, Stack, browser, csrf_in, free_port, log_in, private_redis, profiles,
};
use reqwest::{StatusCode, header};

/// GETs `path` as a browser would (asking for HTML) with `cookie`.
async fn page(app: &App, cookie: &str, path: &str) -> (StatusCode, String, String) {
    let r = browser()
        .get(format!("{}{path}", app.base))
        .header(header::COOKIE, cookie)
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    let kind = r
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let location = r
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let status = r.status();
    let body = r.text().await.unwrap();
    (status, location.unwrap_or(kind), body)
}

async fn post_form(
    app: &App,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let r = browser()
        .post(format!("{}{path}", app.base))
        .header(header::COOKIE, cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    let location = r
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status(), location)
}

/// The selection checkbox's job handle in the list row that shows `text`.
fn id_in_row(html: &str, text: &str) -> String {
    let at = html
        .find(text)
        .unwrap_or_else(|| panic!("{text} in {html}"));
    let row = html[..at].rfind("<tr data-job=").expect("its row");
    let field = html[row..]
        .find("name=\"id\" value=\"")
        .expect("a checkbox")
        + row
        + 17;
    html[field..].split('"').next().unwrap().to_owned()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn queue_count(app: &App, queue: usize, field: &str) -> u64 {
    app.get_root_json("/admin/api/queues").await[queue][field]
        .as_u64()
        .unwrap()
}

const MESSAGES: usize = 1;

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_pages_logins_keep_the_deep_link_and_logouts_revoke() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;
        let token = app.create_app("Acme").await;
        let chat = app.create_chat(&token).await;
        app.create_queued_message(&token, chat, "hello there").await;

        // A deep link, not signed in: the login form, then back there.
        let deep = "/admin/queues/messages/jobs/done?cursor=x";
        let (status, location, _) = page(&app, "", deep).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(
            location,
            "/admin/login?next=%2Fadmin%2Fqueues%2Fmessages%2Fjobs%2Fdone%3Fcursor%3Dx"
        );
        let (_, _, form) = page(&app, "", &location).await;
        assert!(
            form.contains("name=\"next\" value=\"/admin/queues/messages/jobs/done?cursor=x\""),
            "{form}"
        );
        for (next, lands) in [(deep, deep), ("//evil.example/admin", "/admin")] {
            let r = browser()
                .post(format!("{}/admin/login", app.base))
                .form(&[("token", ADMIN_TOKEN), ("name", "Ada"), ("next", next)])
                .send()
                .await
                .unwrap();
            assert_eq!(r.headers()[header::LOCATION], lands, "{next}");
        }

        // Errors on pages are pages, with the navigation and the search
        // form; tools still get problem+json.
        let cookie = log_in(&app, "Ada").await;
        let (status, kind, body) = page(&app, &cookie, "/admin/queues/nope/jobs/dead").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(kind.starts_with("text/html"), "{kind}");
        assert!(
            body.contains("<nav>") && body.contains("id=\"search\""),
            "{body}"
        );
        assert!(body.contains("queue not found"), "{body}");
        let (status, kind, _) = page(&app, &cookie, "/admin/no/such/page").await;
        assert_eq!(
            (status, kind.starts_with("text/html")),
            (StatusCode::NOT_FOUND, true)
        );
        let r = browser()
            .get(format!("{}/admin/queues/nope/jobs/dead", app.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );

        // The cut token that job pages show finds the application's jobs;
        // too short a cut is refused on the search page, filled in.
        let cut = format!("{}…", &token[..4]);
        // "…", percent-encoded as a browser sends it.
        let search = format!("/admin/search?token={}%E2%80%A6&chat={chat}", &token[..4]);
        let mut found = String::new();
        eventually("the cut token finds the message's job", async || {
            found = page(&app, &cookie, &search).await.2;
            found.contains("hello there")
        })
        .await;
        assert!(
            found.contains(&format!("Acme ({cut}) · chat {chat} · message 1")),
            "{found}"
        );
        let (status, _, refused) = page(&app, &cookie, "/admin/search?token=abc").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(refused.contains("id=\"search-error\"") && refused.contains("value=\"abc\""));

        // The live overview is the whole overview, without its frame; the
        // day's chart is a link away.
        let (status, _, live) = page(&app, &cookie, "/admin/live/overview").await;
        assert_eq!(status, StatusCode::OK);
        for part in [
            "id=\"queues\"",
            "id=\"workers\"",
            "id=\"chart-all\"",
            "id=\"backends\"",
        ] {
            assert!(live.contains(part), "{part}");
        }
        assert!(!live.contains("<html"));
        let (_, _, day) = page(&app, &cookie, "/admin?range=day").await;
        assert!(day.contains("id=\"chart-messages\"") && day.contains("last day"));
        let (status, location, _) =
            page(&app, &cookie, "/admin/queues/messages/dead?error=x").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(
            location, "/admin/queues/messages/jobs/dead?error=x",
            "one dead list"
        );

        // Logging out revokes the session for every copy of the cookie;
        // another session stays open.
        let other = log_in(&app, "Grace").await;
        let (status, _) = post_form(&app, &cookie, "/admin/logout", &[]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, location, _) = page(&app, &cookie, "/admin").await;
        assert_eq!(
            status,
            StatusCode::SEE_OTHER,
            "the old cookie no longer opens /admin"
        );
        assert!(location.starts_with("/admin/login"), "{location}");
        assert_eq!(page(&app, &other, "/admin").await.0, StatusCode::OK);
        stack.cleanup().await;
    }
}

fn failing(switch: &std::path::Path, retry_base_ms: &str, attempts: &str) -> Vec<(String, String)> {
    std::fs::write(switch, b"on").unwrap();
    vec![
        ("CHAT_TEST_FAIL_SWITCH".into(), switch.display().to_string()),
        ("JOB_MAX_ATTEMPTS".into(), attempts.into()),
        ("RETRY_BASE_MS".into(), retry_base_ms.into()),
    ]
}

async fn spawn(stack: &Stack, env: &[(String, String)]) -> App {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    stack.spawn("serve", &pairs).await
}

const DOOMED: &str = "fail-while-switched-on";

#[tokio::test(flavor = "multi_thread")]
async fn bulk_retries_are_recorded_per_job_and_marked_in_the_attempts() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let switch = stack.data_dir.join("fail-switch");
        let app = spawn(&stack, &failing(&switch, "20", "2")).await;
        let token = app.create_app("Acme").await;
        let chat = app.create_chat(&token).await;
        for tag in ["alpha", "beta"] {
            app.create_queued_message(&token, chat, &format!("{DOOMED}: {tag}"))
                .await;
        }
        eventually("both jobs die", async || {
            queue_count(&app, MESSAGES, "dead").await == 2
        })
        .await;
        let cookie = log_in(&app, "Ada").await;
        let list = "/admin/queues/messages/jobs/dead";
        let (_, _, dead) = page(&app, &cookie, list).await;
        assert!(
            dead.contains(&format!("chat {chat} · message 1")),
            "arguments in rows: {dead}"
        );
        let ids = [id_in_row(&dead, "alpha"), id_in_row(&dead, "beta")];

        // The filter ignores case, and says when nothing matches.
        let (_, _, shouted) =
            page(&app, &cookie, &format!("{list}?error=INJECTED%20FAILURE")).await;
        assert!(
            ids.iter().all(|id| shouted.contains(id.as_str())),
            "{shouted}"
        );
        let (_, _, none) = page(&app, &cookie, &format!("{list}?error=no-such-error")).await;
        assert!(none.contains("No dead job matches") && none.contains("2 dead jobs in all"));

        // Retry both, selected; the switch stays on, so they die again.
        let query = format!("action=retry&id={}&id={}", ids[0], ids[1]);
        let (status, _, confirm) = page(&app, &cookie, &format!("{list}/bulk?{query}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(confirm.contains("Put 2 jobs"), "{confirm}");
        let csrf = csrf_in(&confirm);
        let form = [
            ("csrf", csrf.as_str()),
            ("action", "retry"),
            ("id", ids[0].as_str()),
            ("id", ids[1].as_str()),
        ];
        let (status, location) = post_form(&app, &cookie, &format!("{list}/bulk"), &form).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(
            location.starts_with(&format!("{list}?done=2")),
            "{location}"
        );
        let audit = app.get_root_json("/admin/api/audit").await;
        let entries = audit.as_array().unwrap();
        // Recorded under the name each job goes on with (a new one on Redis,
        // which says what it was).
        for id in &ids {
            let was = format!("was {id}");
            assert!(
                entries.iter().any(|e| e["action"] == "retry"
                    && (e["job_id"] == id.as_str()
                        || e["detail"].as_str().is_some_and(|d| d.contains(&was)))),
                "a record per job: {audit}"
            );
        }
        let summary = entries
            .iter()
            .find(|e| e["action"] == "retry_bulk")
            .expect("a summary");
        let detail = summary["detail"].as_str().unwrap();
        assert!(
            ids.iter().all(|id| detail.contains(id.as_str())),
            "{detail}"
        );

        // Dead again: the attempts start over, and the page says why.
        eventually("both die again", async || {
            let dead = app.get_root_json("/admin/api/dead").await;
            let jobs = dead[MESSAGES]["jobs"].as_array().unwrap().clone();
            jobs.len() == 2
                && jobs
                    .iter()
                    .all(|j| j["failures"].as_array().unwrap().len() == 4)
        })
        .await;
        let (_, _, dead) = page(&app, &cookie, list).await;
        let again = id_in_row(&dead, "alpha");
        let (_, _, job) = page(&app, &cookie, &format!("{list}/{again}")).await;
        let attempts = job.split("id=\"attempts\"").nth(1).unwrap_or(&job);
        assert!(
            job.contains("class=\"retried\"") && job.contains("Retried by Ada"),
            "{profile:?}: {attempts}"
        );
        assert!(
            job.contains("one of 2 in a bulk retry"),
            "the job's own audit: {job}"
        );
        stack.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_now_cancel_and_a_pause_that_outlives_a_restart() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let switch = stack.data_dir.join("fail-switch");
        // A ten-minute backoff: only "retry now" can bring a job back soon.
        let env = failing(&switch, "600000", "5");
        let app = spawn(&stack, &env).await;
        let token = app.create_app("Acme").await;
        let chat = app.create_chat(&token).await;
        for tag in ["soon", "never"] {
            app.create_queued_message(&token, chat, &format!("{DOOMED}: {tag}"))
                .await;
        }
        eventually("both wait for a retry", async || {
            queue_count(&app, MESSAGES, "retrying").await == 2
        })
        .await;
        let cookie = log_in(&app, "Ada").await;
        let list = "/admin/queues/messages/jobs/retrying";
        let (_, _, retrying) = page(&app, &cookie, list).await;
        let soon = id_in_row(&retrying, "soon");
        let never = id_in_row(&retrying, "never");
        std::fs::remove_file(&switch).unwrap();

        let (status, _, confirm) = page(&app, &cookie, &format!("{list}/{never}/cancel")).await;
        assert_eq!(status, StatusCode::OK);
        let csrf = csrf_in(&confirm);
        let (status, _) = post_form(
            &app,
            &cookie,
            &format!("{list}/{never}/cancel"),
            &[("csrf", &csrf)],
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, _) = post_form(
            &app,
            &cookie,
            &format!("{list}/{soon}/retry_now"),
            &[("csrf", &csrf)],
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        eventually("the job run now is persisted", async || {
            stack.messages_with_body(&format!("{DOOMED}: soon")).await == 1
        })
        .await;
        assert_eq!(
            queue_count(&app, MESSAGES, "retrying").await,
            0,
            "the cancelled one is gone"
        );
        assert_eq!(
            stack.messages_with_body(&format!("{DOOMED}: never")).await,
            0
        );

        // Paused: the API accepts, nothing is persisted, across a restart.
        let (_, _, overview) = page(&app, &cookie, "/admin").await;
        let csrf = csrf_in(&overview);
        let (status, _) = post_form(
            &app,
            &cookie,
            "/admin/queues/messages/pause",
            &[("csrf", &csrf)],
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        app.create_queued_message(&token, chat, "held back").await;
        app.create_queued_message(&token, chat, "dropped").await;
        app.kill9();
        let app = stack.spawn("serve", &[]).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            stack.messages_with_body("held back").await,
            0,
            "still paused on {profile:?}"
        );
        assert_eq!(queue_count(&app, MESSAGES, "ready").await, 2);
        let cookie = log_in(&app, "Ada").await;
        let (_, _, overview) = page(&app, &cookie, "/admin").await;
        assert!(
            overview.contains("data-paused=\"messages\"") && overview.contains("paused by Ada")
        );
        let queues = app.get_root_json("/admin/api/queues").await;
        assert_eq!(queues[MESSAGES]["paused"]["paused_by"], "Ada", "{queues}");
        assert!(queues[0]["paused"].is_null());
        // Cancel one of the waiting jobs by selection, then resume.
        let (_, _, pending) = page(&app, &cookie, "/admin/queues/messages/jobs/pending").await;
        let dropped = id_in_row(&pending, "dropped");
        let csrf = csrf_in(&overview);
        let form = [
            ("csrf", csrf.as_str()),
            ("action", "cancel"),
            ("id", dropped.as_str()),
        ];
        let (status, _) = post_form(
            &app,
            &cookie,
            "/admin/queues/messages/jobs/pending/bulk",
            &form,
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, _) = post_form(
            &app,
            &cookie,
            "/admin/queues/messages/resume",
            &[("csrf", &csrf)],
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        eventually("resumed, the held message is persisted", async || {
            stack.messages_with_body("held back").await == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(stack.messages_with_body("held back").await, 1, "once");
        assert_eq!(stack.messages_with_body("dropped").await, 0, "cancelled");
        let audit = app.get_root_json("/admin/api/audit").await.to_string();
        for action in ["\"pause\"", "\"resume\"", "\"cancel\"", "\"retry_now\""] {
            assert!(audit.contains(action), "{action} in {audit}");
        }
        stack.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_overview_says_which_backend_is_down_and_still_renders() {
    if !profiles().contains(&common::Profile::Distributed) {
        eprintln!("TEST_MYSQL_URL and TEST_REDIS_URL are unset: skipping");
        return;
    }
    let port = free_port();
    let mut redis = private_redis(port);
    let mut stack = Stack::new(common::Profile::Distributed).await;
    stack.redis_url = Some(format!("redis://127.0.0.1:{port}"));
    let app = stack.spawn("serve", &[]).await;
    let cookie = log_in(&app, "Ada").await;
    let (status, _, overview) = page(&app, &cookie, "/admin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!overview.contains("data-down="), "{overview}");
    redis.kill().unwrap();
    redis.wait().unwrap();
    let (status, _, overview) = page(&app, &cookie, "/admin").await;
    assert_eq!(status, StatusCode::OK, "the overview renders without Redis");
    assert!(overview.contains("data-down=\"redis\""), "{overview}");
    assert!(
        overview.contains("id=\"workers\""),
        "what the database holds is still shown"
    );
    stack.cleanup().await;
}
