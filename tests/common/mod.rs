//! Test harness: spawns the real `chat` binary on a profile and talks HTTP.
//!
//! Every test runs on the embedded profile, and again on MySQL + Redis when
//! `TEST_MYSQL_URL` and `TEST_REDIS_URL` are set. Each app gets its own
//! data directory, MySQL database and Redis key prefix, so tests run in
//! parallel without seeing each other.
#![allow(dead_code)]

pub mod search;

pub use chat_faults::cluster;

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Embedded,
    Distributed,
    /// MySQL and a private Redis Cluster this test starts.
    Cluster,
}

/// The profiles this run can test.
pub fn profiles() -> Vec<Profile> {
    let mut out = vec![Profile::Embedded];
    if distributed_urls().is_some() {
        out.push(Profile::Distributed);
    }
    out
}

/// The profiles this run can test, a Redis Cluster included when the
/// distributed profile runs and this machine can start one.
pub fn profiles_with_cluster() -> Vec<Profile> {
    let mut out = profiles();
    if out.contains(&Profile::Distributed) && cluster::available() {
        out.push(Profile::Cluster);
    }
    out
}

fn distributed_urls() -> Option<(String, String)> {
    let mysql = std::env::var("TEST_MYSQL_URL")
        .ok()
        .filter(|s| !s.is_empty())?;
    let redis = std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|s| !s.is_empty())?;
    Some((mysql.trim_end_matches('/').to_owned(), redis))
}

/// The storage one test owns: a data dir, and on the distributed profile a
/// fresh MySQL database and a Redis key prefix.
pub struct Stack {
    pub profile: Profile,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    mysql_admin: Option<(String, String)>,
    /// The private Redis Cluster of the cluster profile.
    pub cluster: Option<cluster::Cluster>,
    /// Every process started on this stack, stopped before cleanup so none
    /// writes to storage that is being removed.
    apps: std::sync::Mutex<Vec<App>>,
}

impl Stack {
    pub async fn new(profile: Profile) -> Stack {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let data_dir = std::env::temp_dir().join(format!("chat-test-{id}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let redis_prefix = format!("t{}:", &id[..12]);
        match profile {
            Profile::Embedded => Stack {
                profile,
                database_url: format!("sqlite://{}?mode=rwc", data_dir.join("chat.db").display()),
                data_dir,
                redis_url: None,
                redis_prefix,
                mysql_admin: None,
                cluster: None,
                apps: Default::default(),
            },
            Profile::Distributed | Profile::Cluster => {
                let (mysql, redis) =
                    distributed_urls().expect("distributed profile needs TEST_* urls");
                let cluster = (profile == Profile::Cluster).then(cluster::Cluster::start);
                let redis = cluster.as_ref().map_or(redis, |c| c.url());
                let name = format!("chat_t_{}", &id[..16]);
                let admin = Database::connect(mysql.clone())
                    .await
                    .expect("connect to TEST_MYSQL_URL");
                admin
                    .execute_unprepared(&format!(
                        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                    ))
                    .await
                    .unwrap();
                Stack {
                    profile,
                    database_url: format!("{mysql}/{name}"),
                    data_dir,
                    redis_url: Some(redis),
                    redis_prefix,
                    mysql_admin: Some((mysql, name)),
                    cluster,
                    apps: Default::default(),
                }
            }
        }
    }

    /// Storage handles as a process of the stack would open them; `lease`
    /// is how long claims made through them last (on SQLite it is stamped
    /// on the row at claim time).
    pub async fn backends(&self, lease: Duration) -> chat::backends::Backends {
        chat::backends::Backends::open(&chat::backends::BackendsConfig {
            database_url: self.database_url.clone(),
            redis_url: self.redis_url.clone(),
            redis_prefix: self.redis_prefix.clone(),
            redis_shards: 4,
            claim_idle: lease,
            pending_ttl: Duration::from_secs(3600),
            jobs_done_max: 10_000,
            idempotency_retention: Duration::from_secs(3600),
            // Not the app's own index directory, which a running server
            // holds: these tests never search. One per call, since an
            // embedded index has one owner at a time.
            search: chat_search::SearchConfig::Embedded {
                dir: self
                    .data_dir
                    .join(format!("search-of-test-{}", uuid::Uuid::new_v4().simple())),
            },
        })
        .await
        .unwrap()
    }

    pub async fn db(&self) -> DatabaseConnection {
        Database::connect(self.database_url.clone()).await.unwrap()
    }

    /// How many persisted messages have exactly this body.
    pub async fn messages_with_body(&self, body: &str) -> i64 {
        let db = self.db().await;
        let row = db
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM messages WHERE body = ?",
                [body.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap()
    }

    /// The shared Redis of the distributed profile (`None` on a cluster,
    /// which the test owns whole).
    pub fn redis(&self) -> Option<redis::Client> {
        self.redis_url
            .as_ref()
            .filter(|_| self.cluster.is_none())
            .map(|u| redis::Client::open(u.as_str()).unwrap())
    }

    /// Runs a `chat` command on this stack to its end.
    pub fn run_chat(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATA_DIR", &self.data_dir)
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_PREFIX", &self.redis_prefix)
            .env("RUST_LOG", "error");
        if let Some(url) = &self.redis_url {
            cmd.env("REDIS_URL", url);
        }
        cmd.output().expect("run chat")
    }

    /// Starts a `chat` process on this stack.
    pub async fn spawn(&self, role: &str, env: &[(&str, &str)]) -> App {
        self.spawn_logged(role, env, None).await
    }

    /// Starts a `chat` process whose standard output (its log) goes to
    /// `log`, when given.
    pub async fn spawn_logged(
        &self,
        role: &str,
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> App {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat"));
        cmd.arg(role)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("DATA_DIR", &self.data_dir)
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_PREFIX", &self.redis_prefix)
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .env("BATCH_LINGER_MS", "10")
            .env("INDEX_LINGER_MS", "10")
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(if std::env::var("TEST_LOG").is_ok() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(if std::env::var("TEST_LOG").is_ok() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        if let Some(url) = &self.redis_url {
            cmd.env("REDIS_URL", url);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(log) = log {
            cmd.stdout(std::fs::File::create(log).expect("create log file"));
        }
        let child = cmd.spawn().expect("spawn chat");
        let app = App {
            child: std::sync::Arc::new(Guard(std::sync::Mutex::new(Some(child)))),
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            has_http: role == "serve" || role == "api",
        };
        self.apps.lock().unwrap().push(app.clone());
        if app.has_http {
            app.wait_ready().await;
        }
        app
    }

    pub async fn cleanup(self) {
        for app in self.apps.lock().unwrap().drain(..) {
            app.kill9();
        }
        if let Some((admin, name)) = &self.mysql_admin
            && let Ok(db) = Database::connect(admin.clone()).await
        {
            let _ = db
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS `{name}`"))
                .await;
        }
        if let Some(client) = self.redis()
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.redis_prefix))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The dashboard token every spawned process gets.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A client that shows redirects instead of following them, as the
/// dashboard's tests look at where a page sends the browser.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in to the dashboard through the form, checking the cookie's
/// flags; returns the session cookie's `name=value`.
pub async fn log_in(app: &App, name: &str) -> String {
    let r = browser()
        .post(format!("{}/admin/login", app.base))
        .form(&[("token", ADMIN_TOKEN), ("name", name)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[reqwest::header::LOCATION], "/admin");
    let cookie = r.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    // Plain HTTP: a browser would drop a `Secure` cookie, and loop.
    assert!(!cookie.contains("Secure"), "{cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

/// The value of the hidden `csrf` input in a form page.
pub fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// What `check` finds once it finds something, polling every 100 ms;
/// fails the test, naming `what`, after `within`.
pub async fn wait_for<T>(
    what: &str,
    within: std::time::Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The process behind an [`App`]; killed when the last clone is dropped.
struct Guard(std::sync::Mutex<Option<Child>>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A running `chat` process.
#[derive(Clone)]
pub struct App {
    child: std::sync::Arc<Guard>,
    pub base: String,
    pub http: reqwest::Client,
    has_http: bool,
}

impl App {
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/health/ready", self.base))
                .send()
                .await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "app at {} never became ready",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits up to `within` for the process to exit; returns
    /// whether it exited successfully in time. Waits asynchronously, so
    /// this test's own HTTP connections keep being served meanwhile.
    pub async fn terminate(&self, within: Duration) -> bool {
        let pid = match self.child.0.lock().unwrap().as_ref() {
            Some(child) => child.id(),
            None => return false,
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let deadline = Instant::now() + within;
        loop {
            {
                let mut guard = self.child.0.lock().unwrap();
                match guard.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(status))) => {
                        guard.take();
                        return status.success();
                    }
                    Some(Ok(None)) => {}
                    _ => return false,
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.0.lock().unwrap().as_ref().map(|c| c.id())
    }

    /// Sends a signal by name (`STOP`, `CONT`, …).
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// SIGKILL: no graceful shutdown, no flushing.
    pub fn kill9(&self) {
        if let Some(mut c) = self.child.0.lock().unwrap().take() {
            let _ = Command::new("kill")
                .arg("-9")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// GET of a path outside the API (`/admin/api/…`, as an operator)
    /// that must answer with JSON.
    pub async fn get_root_json(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// GET of a dashboard page as an operator; it must answer 200.
    pub async fn get_admin_page(&self, path: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.text().await.unwrap()
    }

    /// GET of a path that must answer with JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.unwrap()
    }

    pub async fn put_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .put(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn patch_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .patch(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn create_app(&self, name: &str) -> String {
        let r = self
            .post_json("/applications", json!({ "name": name }))
            .await;
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn create_chat(&self, token: &str) -> i64 {
        let r = self
            .post_json(&format!("/applications/{token}/chats"), json!({}))
            .await;
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        r.json::<Value>().await.unwrap()["number"].as_i64().unwrap()
    }

    pub async fn create_message(&self, token: &str, chat: i64, body: &str) -> i64 {
        self.post_message(token, chat, body, None).await
    }

    /// Creates a message that a persistence job writes, on every profile:
    /// a create under an `Idempotency-Key` takes the job path, where a plain
    /// one on the embedded profile is written in the intake's transaction.
    /// For tests of what operators see and do with jobs.
    pub async fn create_queued_message(&self, token: &str, chat: i64, body: &str) -> i64 {
        let key = uuid::Uuid::new_v4().to_string();
        self.post_message(token, chat, body, Some(&key)).await
    }

    async fn post_message(&self, token: &str, chat: i64, body: &str, key: Option<&str>) -> i64 {
        let mut request = self
            .http
            .post(self.url(&format!("/applications/{token}/chats/{chat}/messages")));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let r = request.json(&json!({ "body": body })).send().await.unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["number"].as_i64().unwrap()
    }

    /// Every item of a list, following `next_after` to the end.
    pub async fn list_all(&self, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut after = 0i64;
        loop {
            let r = self.get(&format!("{path}?limit=200&after={after}")).await;
            assert_eq!(r.status(), 200);
            let page: Value = r.json().await.unwrap();
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_after"].as_i64() {
                Some(n) => after = n,
                None => return items,
            }
        }
    }

    /// Waits until a list holds `n` items (the persistence delay).
    pub async fn wait_listed(&self, path: &str, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let items = self.list_all(path).await;
            if items.len() >= n || Instant::now() > deadline {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The numbers of a list's items, in order.
/// The internal id of the application `token` names, which the API never
/// shows: for tests that look into storage.
pub async fn app_id(db: &DatabaseConnection, token: &str) -> i64 {
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT id FROM applications WHERE token = ?",
            [token.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

pub fn numbers(items: &[Value]) -> Vec<i64> {
    items
        .iter()
        .map(|i| i["number"].as_i64().unwrap())
        .collect()
}

/// Starts a throwaway redis-server on `port` (no persistence) and waits
/// until it answers.
pub fn private_redis(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "private redis did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}
