//! Search backends under test, and an in-process write pipeline whose
//! search can be switched off.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use chat::backends::{Backends, BackendsConfig};
use chat_jobs::{WorkerConfig, batcher::BatchConfig, settle::RetryPolicy};
use chat_queue::{QueueName, QueueStats};
use chat_search as search;
use chat_search::{SearchConfig, SearchIndex};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// Embedded tantivy.
    Tantivy,
    /// osmem-server: an in-memory, OpenSearch-compatible emulator, not
    /// Elasticsearch. Each test starts its own.
    Emulator,
    /// A real Elasticsearch at `ELASTICSEARCH_URL`.
    Elasticsearch,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.trim().is_empty())
}

/// Every backend this run can test: tantivy always, the others when
/// configured.
pub fn engines() -> Vec<EngineKind> {
    let mut out = vec![EngineKind::Tantivy];
    if env("OSMEM_SERVER").is_some() {
        out.push(EngineKind::Emulator);
    }
    if env("ELASTICSEARCH_URL").is_some() {
        out.push(EngineKind::Elasticsearch);
    }
    out
}

pub struct Engine {
    pub kind: EngineKind,
    pub index: Arc<dyn SearchIndex>,
    dir: PathBuf,
    /// Elasticsearch's address and this test's alias.
    es: Option<(String, String)>,
    emulator: Option<Child>,
}

impl Engine {
    pub async fn start(kind: EngineKind) -> Engine {
        Self::start_sharded(kind, 1).await
    }

    /// An engine whose Elasticsearch index generations have `shards`
    /// primary shards (ignored by tantivy).
    pub async fn start_sharded(kind: EngineKind, shards: u32) -> Engine {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("chat-search-{id}"));
        let (config, es, emulator) = match kind {
            EngineKind::Tantivy => (
                SearchConfig::Embedded {
                    dir: dir.join("search"),
                },
                None,
                None,
            ),
            EngineKind::Emulator | EngineKind::Elasticsearch => {
                let (url, child) = if kind == EngineKind::Emulator {
                    let (url, child) = start_emulator();
                    (url, Some(child))
                } else {
                    (env("ELASTICSEARCH_URL").unwrap(), None)
                };
                let alias = format!("chat-t{}", &id[..12]);
                (
                    SearchConfig::Elasticsearch {
                        url: url.clone(),
                        alias: alias.clone(),
                        shards,
                    },
                    Some((url, alias)),
                    child,
                )
            }
        };
        let index = search::open(&config).await.unwrap();
        index.ensure().await.unwrap();
        Engine {
            kind,
            index,
            dir,
            es,
            emulator,
        }
    }

    /// Makes everything indexed so far searchable (Elasticsearch refreshes
    /// once a second by itself; tantivy is searchable at commit).
    pub async fn refresh(&self) {
        if let Some((url, alias)) = &self.es {
            let r = reqwest::Client::new()
                .post(format!("{url}/{alias}/_refresh"))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "refresh: {}", r.status());
        }
    }

    /// Elasticsearch's address and the alias, for requests the index
    /// does not make.
    pub fn es(&self) -> Option<(&str, &str)> {
        self.es
            .as_ref()
            .map(|(url, alias)| (url.as_str(), alias.as_str()))
    }

    /// Elasticsearch returns each hit's score exactly as it sorted by it,
    /// so `search_after` resumes strictly after the last hit. The emulator
    /// sorts by a 64-bit score but returns it rounded to 32 bits, and its
    /// next page repeats the boundary hit.
    pub fn paginates_by_score_exactly(&self) -> bool {
        if self.kind == EngineKind::Emulator {
            eprintln!("skipped on the emulator, needs real Elasticsearch: search_after on _score");
            false
        } else {
            true
        }
    }

    pub async fn cleanup(mut self) {
        if let (EngineKind::Elasticsearch, Some((url, alias))) = (self.kind, &self.es) {
            let client = reqwest::Client::new();
            let indices: serde_json::Value = client
                .get(format!("{url}/_alias/{alias}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or_default();
            for index in indices.as_object().into_iter().flat_map(|m| m.keys()) {
                let _ = client.delete(format!("{url}/{index}")).send().await;
            }
            let _ = client
                .delete(format!("{url}/_index_template/{alias}"))
                .send()
                .await;
        }
        if let Some(mut child) = self.emulator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(child) = self.emulator.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a private emulator on a free port and waits until it answers.
pub fn start_emulator() -> (String, Child) {
    let port = super::free_port();
    let child = Command::new(env("OSMEM_SERVER").unwrap())
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--no-ja",
            "--no-stdin-watch",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("OSMEM_SERVER names the emulator's launcher");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the emulator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (format!("http://127.0.0.1:{port}"), child)
}

/// The embedded write pipeline in this process (SQLite, its queue, the
/// worker pool), indexing into a search backend the test controls.
pub struct Pipeline {
    pub backends: Backends,
    dir: PathBuf,
    stop: watch::Sender<bool>,
    workers: tokio::task::JoinHandle<()>,
}

impl Pipeline {
    pub async fn start(search: Arc<dyn SearchIndex>) -> Pipeline {
        let dir =
            std::env::temp_dir().join(format!("chat-pipeline-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut backends = Backends::open(&BackendsConfig {
            database_url: chat_links::db::default_sqlite_url(&dir),
            redis_url: None,
            redis_prefix: String::new(),
            redis_shards: 1,
            claim_idle: Duration::from_secs(15),
            pending_ttl: Duration::from_secs(3600),
            jobs_done_max: 10_000,
            idempotency_retention: Duration::from_secs(3600),
            search: SearchConfig::Embedded {
                dir: dir.join("unused-search"),
            },
        })
        .await
        .unwrap();
        backends.search = search;
        let retry = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(50),
            max: Duration::from_millis(400),
        };
        let config = WorkerConfig {
            batch: BatchConfig {
                max_rows: 100,
                linger: Duration::from_millis(10),
                writes_in_flight: 1,
                write_timeout: Duration::from_secs(10),
            },
            retry,
            index_retry: RetryPolicy {
                max_attempts: 1_000,
                ..retry
            },
            lease: Duration::from_secs(15),
            index_batch_rows: 100,
            index_linger: Duration::from_millis(10),
        };
        let (stop, shutdown) = watch::channel(false);
        let workers = {
            let b = backends.worker();
            tokio::spawn(async move { chat_jobs::run_pool(&b, config, shutdown).await })
        };
        Pipeline {
            backends,
            dir,
            stop,
            workers,
        }
    }

    /// A new application with one chat.
    pub async fn chat(&self) -> (i64, i64) {
        let app = chat_store::repo::applications::create(&self.backends.db, "search")
            .await
            .unwrap();
        let chat = self
            .backends
            .intake
            .create_chat(app.id, Some("c".into()), Default::default())
            .await
            .unwrap();
        (app.id, chat.number)
    }

    pub async fn write(&self, app: i64, chat: i64, body: &str) {
        self.backends
            .intake
            .create_message(app, chat, body.into(), Default::default())
            .await
            .unwrap();
    }

    pub async fn wait_persisted(&self, app: i64, chat: i64, n: i64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = chat_store::repo::messages::count(&self.backends.db, app, chat)
                .await
                .unwrap();
            if got == n as u64 {
                return;
            }
            assert!(Instant::now() < deadline, "{got} of {n} persisted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn index_queue_stats(&self) -> QueueStats {
        self.backends.queue.stats(QueueName::Index).await.unwrap()
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(20), self.workers).await;
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
