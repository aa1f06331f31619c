//! The dashboard in a real browser: Debian's Chromium, headless, driven
//! through chromedriver. An operator logs in, watches the overview's
//! counts move as messages are posted and its chart fill, searches for a
//! dead job by application token, chat and message number, opens it and
//! presses Retry, and the row is persisted exactly
//! once; in read-only mode the button is gone and the POST is refused.
//! Screenshots of the overview and of a job's page go to
//! `target/screenshots/`.
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

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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
        env.push(("DASHBOARD_READ_ONLY", "true"));
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
            app.create_message(&token, chat, &format!("fine {i}")).await;
        }
        eventually("the done count rises on the page", async || {
            text_of(&c, done).await.parse::<u64>().unwrap() >= before + 3
        })
        .await;
        // The chart and the workers are drawn on load, from figures the
        // workers write once a second.
        eventually("the chart shows the minute's jobs", async || {
            c.refresh().await.unwrap();
            c.find(Locator::Css("tr[data-queue=messages] svg.chart rect.done"))
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
        let number = app.create_message(&token, chat, DOOMED).await;
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
    app.create_message(&token, chat, DOOMED).await;
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
