//! The dashboard in a real browser: Debian's Chromium, headless, driven
//! through chromedriver. An operator logs in, watches the overview's
//! counts move as messages are posted and its chart fill, searches for a
//! dead job by application token, chat and message number, opens it and
//! presses Retry, and the row is persisted exactly
//! once; in read-only mode the button is gone and the POST is refused.
//! A second walk covers what operators get from the second round: see
//! `an_operator_walks_retries_pauses_and_bulk_actions_in_the_browser`.
//! Screenshots of the overview (idle and under load) and of job pages go
//! to `target/screenshots/`.
//!
//! Skipped, with a message, when /usr/bin/chromedriver is missing (`.ci/run`
//! installs it).
mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::{ADMIN_TOKEN, App, Stack, free_port, profiles};
use fantoccini::{Client, ClientBuilder, Locator, wd::Capabilities};
use hyper_util::client::legacy::connect::HttpConnector;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    process: tokio::process::Child,
    port: u16,
}

async fn chromedriver() -> Option<Driver> {
    if !Path::new(CHROMEDRIVER).exists() {
        eprintln!("{CHROMEDRIVER} is missing: skipping the browser test");
        return None;
    }
    let port = free_port();
    let process = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--log-level=WARNING")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = format!("http://127.0.0.1:{port}/status");
    loop {
        if let Ok(r) = reqwest::get(&status).await
            && r.status().is_success()
        {
            return Some(Driver { process, port });
        }
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn browser(driver: &Driver, profile_dir: &Path) -> Client {
    let mut caps = Capabilities::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1280,1400",
                format!("--user-data-dir={}", profile_dir.display()),
            ],
        }),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session")
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits up to 10 s for the element `css` names.
async fn element(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

async fn fill(c: &Client, css: &str, text: &str) {
    element(c, css).await.send_keys(text).await.unwrap();
}

/// Clicks `css`, finding it again if the page changed under it (a link
/// found on the page being left goes stale when the next one loads).
async fn click(c: &Client, css: &str) {
    for _ in 0..20 {
        match element(c, css).await.click().await {
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other.unwrap(),
        }
    }
    panic!("{css} kept going stale");
}

/// The text of `css`, waiting for it to appear, and finding it again if
/// the live overview replaced it between the finding and the reading.
async fn text_of(c: &Client, css: &str) -> String {
    for _ in 0..20 {
        match element(c, css).await.text().await {
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other.unwrap(),
        }
    }
    panic!("{css} kept going stale");
}

async fn log_in(c: &Client, app: &App) {
    c.goto(&format!("{}/admin", app.base)).await.unwrap();
    // Not signed in: the dashboard sends the browser to the form.
    fill(c, "input[name=token]", ADMIN_TOKEN).await;
    fill(c, "input[name=name]", "Ada").await;
    click(c, "main button[type=submit]").await;
    element(c, "table#queues").await;
    assert!(text_of(c, "header .who").await.contains("Ada"));
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const DOOMED: &str = "fail-while-switched-on: the message behind a complaint";

async fn spawn(stack: &Stack, switch: &Path, read_only: bool) -> App {
    std::fs::write(switch, b"on").unwrap();
    let switch = switch.display().to_string();
    let mut env = vec![
        ("CHAT_TEST_FAIL_SWITCH", switch.as_str()),
        ("JOB_MAX_ATTEMPTS", "2"),
        ("RETRY_BASE_MS", "20"),
    ];
    if read_only {
        env.push(("DASHBOARD_READ_ONLY", "on"));
    }
    stack.spawn("serve", &env).await
}

/// Waits until the doomed message's job is dead; returns its handle.
async fn dead_job(app: &App) -> String {
    let mut id = String::new();
    eventually("the job dies", async || {
        let dead = app.get_root_json("/admin/api/dead").await;
        match dead[1]["jobs"][0]["id"].as_str() {
            Some(found) => {
                id = found.to_owned();
                true
            }
            None => false,
        }
    })
    .await;
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_finds_a_dead_job_and_retries_it_in_the_browser() {
    let Some(driver) = chromedriver().await else {
        return;
    };
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let switch = stack.data_dir.join("fail-switch");
        let app = spawn(&stack, &switch, false).await;
        let c = browser(&driver, &stack.data_dir.join("chromium")).await;
        log_in(&c, &app).await;

        // The live overview moves as messages are written.
        let done = "tr[data-queue=messages] td[data-field=done]";
        let before: u64 = text_of(&c, done).await.parse().unwrap();
        let token = app.create_app("complaints").await;
        let chat = app.create_chat(&token).await;
        for i in 0..3 {
            app.create_queued_message(&token, chat, &format!("fine {i}"))
                .await;
        }
        eventually("the done count rises on the page", async || {
            text_of(&c, done).await.parse::<u64>().unwrap() >= before + 3
        })
        .await;
        // The chart and the workers are drawn on load, from figures the
        // workers write once a second.
        eventually("the chart shows the minute's jobs", async || {
            c.refresh().await.unwrap();
            c.find(Locator::Css("figure#chart-messages svg.chart rect.done"))
                .await
                .is_ok()
        })
        .await;
        element(&c, "table#workers tr[data-worker]").await;
        std::fs::write(
            screenshots().join(format!("overview-{profile:?}.png").to_lowercase()),
            c.screenshot().await.unwrap(),
        )
        .unwrap();

        // "Message N in this chat never appeared": its job is dead. Search
        // for it by the application token, chat and message number, open
        // it, and retry it.
        let number = app.create_queued_message(&token, chat, DOOMED).await;
        let id = dead_job(&app).await;
        click(&c, "header nav a[href='/admin/search']").await;
        fill(&c, "input[name=token]", &token).await;
        fill(&c, "input[name=chat]", &chat.to_string()).await;
        fill(&c, "input[name=message]", &number.to_string()).await;
        click(&c, "form#search button[type=submit]").await;
        click(&c, &format!("a[href='/admin/queues/messages/dead/{id}']")).await;
        element(&c, "pre.payload").await;
        assert!(text_of(&c, "pre.payload").await.contains(DOOMED));
        std::fs::write(
            screenshots().join(format!("job-detail-{profile:?}.png").to_lowercase()),
            c.screenshot().await.unwrap(),
        )
        .unwrap();
        std::fs::remove_file(&switch).unwrap();
        c.find(Locator::LinkText("Retry"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        click(&c, "form#confirm button[type=submit]").await;
        element(&c, "p.notice").await;
        assert!(text_of(&c, "p.notice").await.contains("back in its queue"));
        eventually("the retried message is persisted", async || {
            stack.messages_with_body(DOOMED).await == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(stack.messages_with_body(DOOMED).await, 1, "exactly once");
        c.close().await.unwrap();
        stack.cleanup().await;
    }
    drop(driver.process);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_mode_shows_no_retry_button_and_refuses_the_post() {
    let Some(driver) = chromedriver().await else {
        return;
    };
    let stack = Stack::new(common::Profile::Embedded).await;
    let switch = stack.data_dir.join("fail-switch");
    let app = spawn(&stack, &switch, true).await;
    let token = app.create_app("complaints").await;
    let chat = app.create_chat(&token).await;
    app.create_queued_message(&token, chat, DOOMED).await;
    let id = dead_job(&app).await;
    let c = browser(&driver, &stack.data_dir.join("chromium")).await;
    log_in(&c, &app).await;
    c.goto(&format!("{}/admin/queues/messages/dead/{id}", app.base))
        .await
        .unwrap();
    element(&c, "pre.payload").await;
    assert!(text_of(&c, "p.banner").await.contains("Read-only"));
    assert!(
        c.find(Locator::LinkText("Retry")).await.is_err(),
        "no Retry button"
    );
    // The POST itself, from the page's own session, is refused.
    let status = c
        .execute_async(
            &format!(
                "const done = arguments[0];
                 fetch('/admin/queues/messages/dead/{id}/retry', {{method: 'POST',
                   headers: {{'content-type': 'application/x-www-form-urlencoded'}}, body: 'csrf='}})
                   .then(r => done(r.status));"
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    c.close().await.unwrap();
    stack.cleanup().await;
    drop(driver.process);
}

/// Clicks the checkbox of the list row that shows `text`.
async fn select_row(c: &Client, text: &str) {
    let xpath = format!("//tr[td[contains(., '{text}')]]//input[@name='id']");
    c.find(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|e| panic!("a row showing {text}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Confirms the action on the page the browser is on, after checking what
/// it says it will do; returns the notice the list shows after.
async fn confirm(c: &Client, question: &str) -> String {
    let asked = text_of(c, "#question").await;
    assert!(asked.contains(question), "{asked}");
    click(c, "form#confirm button[type=submit]").await;
    element(c, "p.notice").await;
    text_of(c, "p.notice").await
}

async fn queue_field(app: &App, field: &str) -> u64 {
    app.get_root_json("/admin/api/queues").await[1][field]
        .as_u64()
        .unwrap()
}

/// Posts messages from 8 clients until `stop` is set; returns how many.
fn load(
    app: &App,
    token: &str,
    chat: i64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    let (app, token) = (app.clone(), token.to_owned());
    tokio::spawn(async move {
        let clients = (0..8).map(|i| {
            let (app, token, stop) = (app.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    app.create_queued_message(&token, chat, &format!("load {i} {n}"))
                        .await;
                    n += 1;
                }
                n
            })
        });
        let mut total = 0;
        for client in clients.collect::<Vec<_>>() {
            total += client.await.unwrap();
        }
        total
    })
}

/// The second round, as an operator walks it: a deep link kept through the
/// login; rows that name their jobs; "retry now" on a selection; the dead
/// list's filter in any case; a bulk retry recorded on each job and marked
/// in its attempts; a queue paused while the live overview shows the
/// backlog grow, a pending job cancelled, the queue resumed; the overview
/// under load, live, with the day's chart; search by the cut token; an
/// error as a page; the health page's repairs; and logging out.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_walks_retries_pauses_and_bulk_actions_in_the_browser() {
    let Some(driver) = chromedriver().await else {
        return;
    };
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let switch = stack.data_dir.join("fail-switch");
        std::fs::write(&switch, b"on").unwrap();
        let switch_env = switch.display().to_string();
        // A ten-minute backoff: only "retry now" brings a job back soon.
        let env = [
            ("CHAT_TEST_FAIL_SWITCH", switch_env.as_str()),
            ("JOB_MAX_ATTEMPTS", "2"),
            ("RETRY_BASE_MS", "600000"),
        ];
        let app = stack.spawn("serve", &env).await;
        let token = app.create_app("Acme").await;
        let chat = app.create_chat(&token).await;
        for tag in ["alpha", "beta"] {
            app.create_queued_message(&token, chat, &format!("fail-while-switched-on: walk {tag}"))
                .await;
        }
        eventually("both wait for their retry", async || {
            queue_field(&app, "retrying").await == 2
        })
        .await;

        // A link to the retrying jobs survives the login.
        let c = browser(&driver, &stack.data_dir.join("chromium")).await;
        let retrying = format!("{}/admin/queues/messages/jobs/retrying", app.base);
        c.goto(&retrying).await.unwrap();
        fill(&c, "input[name=token]", ADMIN_TOKEN).await;
        fill(&c, "input[name=name]", "Ada").await;
        click(&c, "main button[type=submit]").await;
        element(&c, "table#jobs").await;
        assert_eq!(c.current_url().await.unwrap().as_str(), retrying);
        let rows = text_of(&c, "table#jobs").await;
        assert!(rows.contains(&format!("chat {chat} · message 1")), "{rows}");

        // Both run now instead of in ten minutes, and die (still failing).
        click(&c, "input[data-select-all]").await;
        click(&c, "form#bulk button[value=retry_now]").await;
        assert!(confirm(&c, "2 jobs").await.contains("2 jobs due now"));
        eventually("both die", async || queue_field(&app, "dead").await == 2).await;

        // The dead list: its filter ignores case and says when nothing
        // matches; a bulk retry of both is recorded on each.
        click(&c, "nav.tabs a[data-state=dead]").await;
        fill(&c, "form#filter input[name=error]", "INJECTED").await;
        click(&c, "form#filter button").await;
        eventually("the filter keeps both", async || {
            c.current_url()
                .await
                .unwrap()
                .as_str()
                .contains("error=INJECTED")
                && c.find_all(Locator::Css("table#jobs tbody tr"))
                    .await
                    .unwrap()
                    .len()
                    == 2
        })
        .await;
        c.goto(&format!(
            "{}/admin/queues/messages/jobs/dead?error=no+such+error",
            app.base
        ))
        .await
        .unwrap();
        assert!(
            text_of(&c, "#no-match")
                .await
                .contains("No dead job matches")
        );
        c.goto(&format!("{}/admin/queues/messages/jobs/dead", app.base))
            .await
            .unwrap();
        click(&c, "input[data-select-all]").await;
        click(&c, "form#bulk button[value=retry]").await;
        assert!(confirm(&c, "2 jobs").await.contains("2 jobs back"));
        eventually("both wait for a retry again", async || {
            queue_field(&app, "retrying").await == 2
        })
        .await;
        c.goto(&retrying).await.unwrap();
        click(&c, "table#jobs tbody tr td a").await;
        element(&c, "tr.retried").await;
        assert!(text_of(&c, "tr.retried").await.contains("Retried by Ada"));
        assert!(text_of(&c, "#job-audit").await.contains("bulk retry"));
        std::fs::write(
            screenshots().join(format!("job-walk-{profile:?}.png").to_lowercase()),
            c.screenshot().await.unwrap(),
        )
        .unwrap();
        // Fixed: this one runs now from its page, the other by selection.
        std::fs::remove_file(&switch).unwrap();
        c.find(Locator::LinkText("Retry now"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert!(confirm(&c, "Run job").await.contains("due now"));
        c.goto(&retrying).await.unwrap();
        click(&c, "input[data-select-all]").await;
        click(&c, "form#bulk button[value=retry_now]").await;
        confirm(&c, "1 job").await;
        for tag in ["alpha", "beta"] {
            let body = format!("fail-while-switched-on: walk {tag}");
            eventually("each persisted", async || {
                stack.messages_with_body(&body).await == 1
            })
            .await;
        }

        // Paused, the queue holds what the API accepts; the live overview
        // shows the backlog without a reload; one waiting job is cancelled.
        c.goto(&format!("{}/admin", app.base)).await.unwrap();
        click(&c, "tr[data-queue=messages] form button").await;
        element(&c, "p[data-paused=messages]").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        app.create_queued_message(&token, chat, "walk: held").await;
        app.create_queued_message(&token, chat, "walk: dropped")
            .await;
        let ready = "tr[data-queue=messages] td[data-field=ready]";
        eventually("the live overview shows the backlog", async || {
            text_of(&c, ready).await == "2"
        })
        .await;
        assert_eq!(stack.messages_with_body("walk: held").await, 0);
        c.goto(&format!("{}/admin/queues/messages/jobs/pending", app.base))
            .await
            .unwrap();
        select_row(&c, "walk: dropped").await;
        click(&c, "form#bulk button[value=cancel]").await;
        assert!(
            confirm(&c, "Cancel 1 job")
                .await
                .contains("1 job cancelled")
        );
        c.goto(&format!("{}/admin", app.base)).await.unwrap();
        click(&c, "tr[data-queue=messages] form button").await;
        eventually("resumed, the held message is persisted", async || {
            stack.messages_with_body("walk: held").await == 1
        })
        .await;
        assert_eq!(stack.messages_with_body("walk: dropped").await, 0);

        // Under load, the whole overview moves without a reload: counts,
        // chart, workers.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let loader = load(&app, &token, chat, stop.clone());
        let done = "tr[data-queue=messages] td[data-field=done]";
        let before = text_of(&c, done).await;
        let workers = text_of(&c, "#workers").await;
        eventually("counts and workers move live", async || {
            text_of(&c, done).await != before && text_of(&c, "#workers").await != workers
        })
        .await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        std::fs::write(
            screenshots().join(format!("overview-under-load-{profile:?}.png").to_lowercase()),
            c.screenshot().await.unwrap(),
        )
        .unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(loader.await.unwrap() > 0);
        click(&c, "nav#range a[href='/admin?range=day']").await;
        element(&c, "figure#chart-all svg rect.done").await;

        // The cut token a job page shows is enough to search by.
        c.goto(&format!("{}/admin/search", app.base)).await.unwrap();
        fill(&c, "input[name=token]", &format!("{}…", &token[..4])).await;
        fill(&c, "input[name=chat]", &chat.to_string()).await;
        click(&c, "form#search button[type=submit]").await;
        element(&c, "table#jobs").await;

        // An error is a page with the way on.
        c.goto(&format!("{}/admin/queues/nope/jobs/dead", app.base))
            .await
            .unwrap();
        assert!(text_of(&c, "#problem").await.contains("queue not found"));
        element(&c, "header nav").await;
        element(&c, "form#search").await;
        c.goto(&format!("{}/admin/health", app.base)).await.unwrap();
        element(&c, "table#repairs").await;

        // Logged out, /admin asks for the token again.
        click(&c, "header form button").await;
        element(&c, "input[name=token]").await;
        c.goto(&format!("{}/admin", app.base)).await.unwrap();
        element(&c, "input[name=token]").await;
        c.close().await.unwrap();
        stack.cleanup().await;
    }
    drop(driver.process);
}
