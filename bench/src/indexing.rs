//! Indexing as a figure of its own, on the distributed profile: the index
//! worker's documents per second against raw bulk adds into the same index,
//! in the same run. It needs a search server: `ELASTICSEARCH_URL`, or the
//! osmem-server emulator that the bench starts from `OSMEM_SERVER`.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use chat_search::SearchConfig;

use crate::{
    client::{AppUrls, ChatApi},
    limits,
    load::closed_loop,
    run::{Options, posting},
    system::{Deployment, free_port, quiet},
};

/// An application id the system never hands out, for the raw documents.
const RAW_APPLICATION: i64 = 999_999_999;

pub struct SearchServer {
    pub url: String,
    /// "elasticsearch" (`ELASTICSEARCH_URL`) or "osmem-server".
    pub kind: &'static str,
    _emulator: Option<chat_faults::Search>,
}

impl SearchServer {
    /// The search server to measure, if this machine has one.
    pub async fn find(work: &Path) -> anyhow::Result<Option<Self>> {
        if let Ok(url) = std::env::var("ELASTICSEARCH_URL") {
            return Ok(Some(Self {
                url,
                kind: "elasticsearch",
                _emulator: None,
            }));
        }
        let Ok(program) = std::env::var("OSMEM_SERVER") else {
            return Ok(None);
        };
        let emulator = chat_faults::Search::start(work, Path::new(&program), free_port()?).await?;
        Ok(Some(Self {
            url: emulator.url.clone(),
            kind: "osmem-server",
            _emulator: Some(emulator),
        }))
    }

    /// Documents searchable through `alias` now.
    async fn count(&self, http: &reqwest::Client, alias: &str) -> anyhow::Result<u64> {
        http.post(format!("{}/{alias}/_refresh", self.url))
            .send()
            .await?;
        let reply: serde_json::Value = http
            .get(format!("{}/{alias}/_count", self.url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(reply["count"].as_u64().unwrap_or(0))
    }
}

pub struct Indexing {
    pub server: &'static str,
    pub docs: usize,
    /// The index worker: from its start on a queue of `docs` fresh
    /// messages until all of them are searchable.
    pub worker_dps: f64,
    /// Bulk adds of the same number of documents straight into the index.
    pub raw_dps: f64,
    pub worker_rss_mb: f64,
    pub worker_cpu_us_per_doc: f64,
}

impl Indexing {
    pub fn ratio(&self) -> f64 {
        self.worker_dps / self.raw_dps
    }
}

/// Runs with no worker of the deployment's running: posts `docs` messages,
/// then starts a worker that indexes into `server` and times it.
pub async fn measure(
    d: &Deployment,
    server: &SearchServer,
    o: &Options,
    client: &ChatApi,
    app: &AppUrls,
    docs: usize,
) -> anyhow::Result<Indexing> {
    let alias = format!("chat-bench-{:08x}", rand::random::<u32>());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let index = chat_search::open(&SearchConfig::Elasticsearch {
        url: server.url.clone(),
        alias: alias.clone(),
        shards: 1,
    })
    .await?;
    quiet().await;
    eprintln!(
        "[{}] limit: raw bulk adds of {docs} documents into {}",
        d.profile, server.kind
    );
    let (raw_dps, _) =
        limits::raw_index(&*index, RAW_APPLICATION, o.chats, docs, o.index_batch_size).await?;
    let before = server.count(&http, &alias).await?;

    eprintln!("[{}] index: {docs} messages queued", d.profile);
    let request = posting(client, app, 2..=o.chats, None);
    closed_loop(o.concurrency, docs, Duration::MAX, request).await?;
    quiet().await;
    eprintln!("[{}] index: a worker persists and indexes them", d.profile);
    let started = Instant::now();
    let mut worker = d.start_with(
        "worker",
        None,
        &[
            ("ELASTICSEARCH_URL", server.url.as_str()),
            ("SEARCH_INDEX", alias.as_str()),
            ("ELASTICSEARCH_SHARDS", "1"),
        ],
    )?;
    let want = before + docs as u64;
    let give_up = started + Duration::from_secs(900);
    loop {
        if server.count(&http, &alias).await? >= want {
            break;
        }
        worker.ensure_running()?;
        anyhow::ensure!(Instant::now() < give_up, "indexing never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let figures = Indexing {
        server: server.kind,
        docs,
        worker_dps: docs as f64 / elapsed.as_secs_f64(),
        raw_dps,
        worker_rss_mb: worker.peak_rss_mb()?,
        worker_cpu_us_per_doc: worker.cpu_secs()? * 1e6 / docs as f64,
    };
    worker.stop(Duration::from_secs(30)).await?;
    Ok(figures)
}
