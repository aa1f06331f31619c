//! The operators' dashboard over HTTP: nothing under /admin opens without
//! the token; a dead job is found, retried with a confirmed, CSRF-checked
//! POST, persisted exactly once and audited; read-only mode hides and
//! refuses every action. The overview charts what the workers did, lists
//! them, and jobs are found by state and by search.
mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, App, Stack, browser, csrf_in, log_in, profiles_with_cluster};
use reqwest::{StatusCode, header};

async fn page(app: &App, cookie: &str, path: &str) -> (StatusCode, String) {
    let r = browser()
        .get(format!("{}{path}", app.base))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

/// Submits an action form as the session `cookie`; returns the status.
async fn submit(app: &App, cookie: &str, path: &str, csrf: String) -> StatusCode {
    browser()
        .post(format!("{}{path}", app.base))
        .header(header::COOKIE, cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_under_admin_opens_without_the_token() {
    let stack = Stack::new(common::Profile::Embedded).await;
    // Many wrong tokens below, all from one address.
    let app = stack
        .spawn("serve", &[("ADMIN_LOGIN_FAILURES", "1000")])
        .await;
    let http = browser();
    let pages = [
        "/admin",
        "/admin/",
        "/admin/audit",
        "/admin/scheduler",
        "/admin/health",
        "/admin/queues/messages/dead",
        "/admin/queues/messages/dead/1",
        "/admin/queues/messages/dead/1/retry",
        "/admin/queues/messages/dead/retry-all",
        "/admin/search",
        "/admin/search?job_id=1",
        "/admin/queues/messages/jobs/done",
        "/admin/queues/messages/jobs/done/1",
        "/admin/queues/messages/jobs/retrying/1/retry_now",
        "/admin/queues/messages/jobs/pending/bulk?action=cancel&id=1",
        "/admin/live/overview",
        "/admin/no/such/page",
    ];
    let json = [
        "/admin/api/queues",
        "/admin/api/dead",
        "/admin/api/runs",
        "/admin/api/audit",
        "/admin/api/figures",
        "/admin/api/workers",
    ];
    let posts = [
        "/admin/queues/messages/dead/1/retry",
        "/admin/queues/messages/dead/1/discard",
        "/admin/queues/messages/dead/retry-all",
        "/admin/queues/messages/jobs/pending/1/cancel",
        "/admin/queues/messages/jobs/dead/bulk",
        "/admin/queues/messages/pause",
        "/admin/queues/messages/resume",
        "/admin/logout",
    ];
    for credentials in [None, Some("chat_admin=forged.1.abc"), Some("bearer")] {
        let with = |rb: reqwest::RequestBuilder| match credentials {
            None => rb,
            Some("bearer") => rb.bearer_auth("wrong-token"),
            Some(cookie) => rb.header(header::COOKIE, cookie),
        };
        for path in pages {
            let r = with(http.get(format!("{}{path}", app.base)))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path} {credentials:?}");
            // To the login form, which sends the operator back here after.
            let back = format!(
                "/admin/login?next={}",
                path.replace('/', "%2F")
                    .replace('?', "%3F")
                    .replace('=', "%3D")
                    .replace('&', "%26")
            );
            assert_eq!(r.headers()[header::LOCATION], back.as_str());
        }
        for path in json {
            let r = with(http.get(format!("{}{path}", app.base)))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(
                r.headers()[header::CONTENT_TYPE],
                "application/problem+json"
            );
        }
        for path in posts {
            let r = with(http.post(format!("{}{path}", app.base)))
                .form(&[("csrf", "x")])
                .send()
                .await
                .unwrap();
            assert!(
                r.status() == StatusCode::SEE_OTHER || r.status() == StatusCode::UNAUTHORIZED,
                "{path}: {}",
                r.status()
            );
            if r.status() == StatusCode::SEE_OTHER {
                assert_eq!(r.headers()[header::LOCATION], "/admin/login");
            }
        }
    }
    // A wrong token at the form is refused; the right one opens it all.
    let r = http
        .post(format!("{}/admin/login", app.base))
        .form(&[("token", "nope"), ("name", "eve")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    let cookie = log_in(&app, "ada").await;
    for path in ["/admin", "/admin/audit", "/admin/queues/messages/jobs/dead"] {
        let (status, html) = page(&app, &cookie, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(html.contains("signed in as ada"));
    }
    // The printed link signs in too.
    let r = http
        .get(format!("{}/admin/login?token={ADMIN_TOKEN}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers().get(header::SET_COOKIE).is_some());
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_tokens_are_limited_per_address_and_https_gets_a_secure_cookie() {
    let stack = Stack::new(common::Profile::Embedded).await;
    let app = stack
        .spawn(
            "serve",
            &[
                ("ADMIN_LOGIN_FAILURES", "3"),
                ("TRUST_FORWARDED_PROTO", "true"),
            ],
        )
        .await;
    let http = browser();
    let login = |token: &'static str, proto: Option<&'static str>| {
        let mut rb = http
            .post(format!("{}/admin/login", app.base))
            .form(&[("token", token), ("name", "ops")]);
        if let Some(proto) = proto {
            rb = rb.header("x-forwarded-proto", proto);
        }
        rb.send()
    };
    // Behind a proxy that ends TLS, and says so, the cookie is `Secure`.
    let r = login(ADMIN_TOKEN, Some("https")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let secure = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(secure.contains("; Secure"), "{secure}");
    let session = secure.split(';').next().unwrap().to_owned();

    // Three wrong tokens: two at the form, one as a bearer credential.
    for _ in 0..2 {
        let r = login("guess", None).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let queues = format!("{}/admin/api/queues", app.base);
    let r = http.get(&queues).bearer_auth("guess").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Then the address is refused, the right token included, until the
    // window ends.
    let r = login(ADMIN_TOKEN, None).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key(header::RETRY_AFTER));
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    let r = http
        .get(&queues)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    // A session already signed in is no guess, and keeps working.
    let (status, _) = page(&app, &session, "/admin").await;
    assert_eq!(status, StatusCode::OK);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_well_known_admin_token_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("chat-token-{}", uuid::Uuid::new_v4().simple()));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat"))
        .arg("serve")
        .env_clear()
        .env("DATA_DIR", &dir)
        .env("PORT", common::free_port().to_string())
        .env("ADMIN_TOKEN", "change-me")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("exits at once")
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("well-known default"), "{said}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_printed_login_link_opens_from_a_wildcard_bind() {
    let stack = Stack::new(common::Profile::Embedded).await;
    std::fs::create_dir_all(&stack.data_dir).unwrap();
    let log = stack.data_dir.join("serve.log");
    let app = stack
        .spawn_logged(
            "serve",
            &[("ADMIN_TOKEN", ""), ("BIND_ADDR", "0.0.0.0")],
            Some(&log),
        )
        .await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let text = std::fs::read_to_string(&log).unwrap();
    let link = text
        .lines()
        .find_map(|l| l.strip_prefix("dashboard: "))
        .unwrap_or_else(|| panic!("no login link in {text}"));
    assert!(
        link.starts_with(&format!("http://127.0.0.1:{port}/admin/login?token=")),
        "{link}"
    );
    let r = browser().get(link).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers().contains_key(header::SET_COOKIE));
    stack.cleanup().await;
}

/// Posts a message that fails while `switch` exists, and waits for its
/// job to die; returns the dead job's handle.
async fn bury_one_message(app: &App, token: &str, chat: i64) -> String {
    app.create_queued_message(token, chat, "fail-while-switched-on: hello")
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dead = app.get_root_json("/admin/api/dead").await;
        let jobs = dead
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == "messages")
            .unwrap()["jobs"]
            .as_array()
            .unwrap()
            .clone();
        if let Some(job) = jobs.first() {
            assert!(
                job["failures"][0]["error"]
                    .as_str()
                    .unwrap()
                    .contains("injected failure")
            );
            return job["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the job never died");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn failing_env(switch: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("CHAT_TEST_FAIL_SWITCH", switch.display().to_string()),
        ("JOB_MAX_ATTEMPTS", "2".into()),
        ("RETRY_BASE_MS", "20".into()),
    ]
}

async fn spawn_failing(stack: &Stack, switch: &std::path::Path, extra: &[(&str, &str)]) -> App {
    std::fs::write(switch, b"on").unwrap();
    let env = failing_env(switch);
    let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pairs.extend_from_slice(extra);
    stack.spawn("serve", &pairs).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_job_is_retried_from_its_page_and_persisted_once() {
    for profile in profiles_with_cluster() {
        let stack = Stack::new(profile).await;
        let switch = stack.data_dir.join("fail-switch");
        let app = spawn_failing(&stack, &switch, &[]).await;
        let token = app.create_app("ops").await;
        let chat = app.create_chat(&token).await;
        let id = bury_one_message(&app, &token, chat).await;
        let body = "fail-while-switched-on: hello";
        assert_eq!(stack.messages_with_body(body).await, 0);

        let cookie = log_in(&app, "Grace <ops>").await;
        let (_, overview) = page(&app, &cookie, "/admin").await;
        assert!(overview.contains("data-field=\"dead\""));
        // A dead message job holds an accepted write: the overview says so,
        // and so does /metrics, for an alert.
        assert!(overview.contains("id=\"dead-alert\""), "{overview}");
        let metrics = app
            .http
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("chat_queue_dead_alert{queue=\"messages\"} 1"),
            "{metrics}"
        );
        // The distributed profile shows what Redis keeps across a crash.
        assert_eq!(
            overview.contains("id=\"redis\""),
            profile != common::Profile::Embedded,
            "{profile:?}"
        );
        let (_, list) = page(&app, &cookie, "/admin/queues/messages/jobs/dead").await;
        let detail_path = format!("/admin/queues/messages/dead/{id}");
        assert!(list.contains(&detail_path), "{list}");
        let (status, detail) = page(&app, &cookie, &detail_path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(detail.contains("PersistMessage"));
        assert!(detail.contains(body), "the payload is shown");
        // Naming its application by name and cut token, never by the
        // internal id, and never by the whole token.
        assert!(!detail.contains("application_id"), "no internal id");
        assert!(
            detail.contains(&format!("{}…", &token[..4])),
            "the cut token"
        );
        assert!(!detail.contains(&token), "not the whole token");
        let dead = app.get_root_json("/admin/api/dead").await.to_string();
        assert!(!dead.contains("application_id") && !dead.contains(&token));
        assert!(detail.contains("injected failure"), "each attempt's error");
        assert!(detail.contains("Grace &lt;ops&gt;"), "names are escaped");
        let (status, confirm) = page(&app, &cookie, &format!("{detail_path}/retry")).await;
        assert_eq!(status, StatusCode::OK);
        let csrf = csrf_in(&confirm);

        // Without the form's CSRF token the session cannot act.
        let action = format!("{detail_path}/retry");
        let press = |csrf: String| submit(&app, &cookie, &action, csrf);
        assert_eq!(press("stale".into()).await, StatusCode::FORBIDDEN);
        std::fs::remove_file(&switch).unwrap();
        assert_eq!(press(csrf.clone()).await, StatusCode::SEE_OTHER);
        // A second press finds nothing left to retry.
        assert_eq!(press(csrf).await, StatusCode::NOT_FOUND);

        let deadline = Instant::now() + Duration::from_secs(30);
        while stack.messages_with_body(body).await == 0 {
            assert!(Instant::now() < deadline, "the retried job never persisted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(stack.messages_with_body(body).await, 1, "exactly once");
        let (_, audit) = page(&app, &cookie, "/admin/audit").await;
        assert!(audit.contains("Grace &lt;ops&gt;") && audit.contains("retry"));
        assert!(audit.contains(&id));

        // Retry all the dead jobs the list's filter shows.
        std::fs::write(&switch, b"on").unwrap();
        let more = ["fail-while-switched-on: a", "fail-while-switched-on: b"];
        for body in more {
            app.create_queued_message(&token, chat, body).await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while app.get_root_json("/admin/api/queues").await[1]["dead"] != 2 {
            assert!(Instant::now() < deadline, "two more dead jobs");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let filtered = "/admin/queues/messages/jobs/dead?error=injected";
        assert!(
            page(&app, &cookie, filtered)
                .await
                .1
                .contains("Retry all 2 that match")
        );
        let (_, confirm) = page(
            &app,
            &cookie,
            "/admin/queues/messages/dead/retry-all?error=injected",
        )
        .await;
        assert!(
            confirm.contains("Put 2 jobs") && confirm.contains("“injected”"),
            "{confirm}"
        );
        std::fs::remove_file(&switch).unwrap();
        let all = "/admin/queues/messages/dead/retry-all";
        assert_eq!(
            submit(&app, &cookie, all, csrf_in(&confirm)).await,
            StatusCode::SEE_OTHER
        );
        for body in more {
            while stack.messages_with_body(body).await != 1 {
                assert!(Instant::now() < deadline, "{body} persisted once");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert!(
            page(&app, &cookie, "/admin/audit")
                .await
                .1
                .contains("retry_bulk")
        );
        stack.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_mode_hides_and_refuses_every_action() {
    let stack = Stack::new(common::Profile::Embedded).await;
    let switch = stack.data_dir.join("fail-switch");
    // "1", as operators write booleans in the environment.
    let app = spawn_failing(&stack, &switch, &[("DASHBOARD_READ_ONLY", "1")]).await;
    let token = app.create_app("ops").await;
    let chat = app.create_chat(&token).await;
    let id = bury_one_message(&app, &token, chat).await;
    let cookie = log_in(&app, "ada").await;
    let detail_path = format!("/admin/queues/messages/dead/{id}");
    let (status, detail) = page(&app, &cookie, &detail_path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(detail.contains("Read-only"));
    assert!(!detail.contains("/retry\""), "no Retry button");
    assert!(!detail.contains("/discard\""), "no Discard button");
    let (status, _) = page(&app, &cookie, &format!("{detail_path}/retry")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for action in ["retry", "discard"] {
        let r = browser()
            .post(format!("{}{detail_path}/{action}", app.base))
            .bearer_auth(ADMIN_TOKEN)
            .form(&[("csrf", "")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{action}");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
    let dead = app.get_root_json("/admin/api/dead").await;
    assert!(dead.to_string().contains(&id), "the job is still dead");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_overview_shows_throughput_workers_and_jobs_are_found() {
    for profile in profiles_with_cluster() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;
        let token = app.create_app("figures").await;
        let chat = app.create_chat(&token).await;
        for i in 0..5 {
            app.create_queued_message(&token, chat, &format!("counted {i}"))
                .await;
        }
        // The figures are written once a second, the heartbeat every 5 s.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let figures = app.get_root_json("/admin/api/figures").await;
            let done: u64 = figures["queues"]["messages"]["done"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
                .sum();
            let workers = app.get_root_json("/admin/api/workers").await;
            let listed = workers.as_array().unwrap().len();
            if done >= 5 && listed >= 3 && figures["lags"]["persisted"]["p50_ms"].is_u64() {
                assert!(
                    figures["queues"]["messages"]["wait"]["p99_ms"].is_u64(),
                    "{figures}"
                );
                assert!(
                    figures["queues"]["messages"]["run"]["p50_ms"].is_u64(),
                    "{figures}"
                );
                let messages = workers
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|w| w["queue"] == "messages")
                    .expect("a messages worker");
                assert_eq!(
                    messages["pid"].as_i64().unwrap(),
                    i64::from(app.pid().unwrap())
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "figures {figures}, workers {workers}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let cookie = log_in(&app, "Ada").await;
        let (_, overview) = page(&app, &cookie, "/admin").await;
        assert!(
            overview.contains("<rect class=\"done\""),
            "a bar per busy minute"
        );
        assert!(
            overview.contains("id=\"workers\"") && overview.contains("data-worker=\"messages-")
        );
        assert!(overview.contains("id=\"lags\""));

        // The done list pages newest first; each row opens its detail.
        let (status, done) = page(&app, &cookie, "/admin/queues/messages/jobs/done").await;
        assert_eq!(status, StatusCode::OK);
        assert!(done.contains("done at"), "{done}");
        let at = done
            .find("/admin/queues/messages/jobs/done/")
            .expect("a job link");
        let href = done[at..].split('"').next().unwrap().to_owned();
        let (status, detail) = page(&app, &cookie, &href).await;
        assert_eq!(status, StatusCode::OK);
        assert!(detail.contains("counted "), "{detail}");
        for shown in [
            "id=\"enqueued\"",
            "id=\"wait\"",
            "id=\"ran\"",
            "id=\"worker\">messages-",
        ] {
            assert!(detail.contains(shown), "{shown} in {detail}");
        }

        // Search by the application token with chat and message number.
        let search = format!("/admin/search?token={token}&chat={chat}&message=3");
        let (status, found) = page(&app, &cookie, &search).await;
        assert_eq!(status, StatusCode::OK);
        let rows = found.matches("<tr data-job=").count();
        assert!(rows >= 1, "{found}");
        let (_, missing) = page(
            &app,
            &cookie,
            &format!("/admin/search?token={token}&chat={chat}&message=99"),
        )
        .await;
        assert!(missing.contains("id=\"no-match\""), "{missing}");
        let (status, _) = page(&app, &cookie, "/admin/search?chat=1").await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "a chat number needs its token"
        );
        stack.cleanup().await;
    }
}
