//! Load generator for a running `chat` server; prints numbers, asserts
//! nothing. `bench/run.sh` starts the servers and calls it.
//!
//! - `post`: N message POSTs from C concurrent clients: throughput and
//!   latency percentiles, then the delay from a 201 to the row being
//!   listed, sampled one message at a time.
//! - `decay`: posts N messages while counting persisted rows in the
//!   database, and compares the persist rate of the first and last tenth.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use futures::future::join_all;
use sea_orm::Database;
use serde_json::{Value, json};

#[derive(Parser)]
struct Cli {
    /// Base URL of the server, e.g. http://127.0.0.1:3000
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    base: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Post {
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 200)]
        lag_samples: usize,
    },
    Decay {
        #[arg(long, default_value_t = 200_000)]
        messages: usize,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// The server's database, to count persisted rows.
        #[arg(long)]
        database_url: String,
    },
}

struct Target {
    http: reqwest::Client,
    api: String,
    token: String,
}

impl Target {
    async fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        let api = format!("{base}/api/v1");
        let app: Value = http
            .post(format!("{api}/applications"))
            .json(&json!({ "name": "bench" }))
            .send()
            .await?
            .json()
            .await?;
        let token = app["token"].as_str().unwrap().to_owned();
        let t = Self { http, api, token };
        t.http
            .post(t.chats())
            .json(&json!({}))
            .send()
            .await?
            .error_for_status()?;
        Ok(t)
    }

    fn chats(&self) -> String {
        format!("{}/applications/{}/chats", self.api, self.token)
    }

    fn messages(&self) -> String {
        format!("{}/1/messages", self.chats())
    }

    async fn post(&self, body: &str) -> anyhow::Result<i64> {
        let r = self
            .http
            .post(self.messages())
            .json(&json!({ "body": body }))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "POST answered {}", r.status());
        Ok(r.json::<Value>().await?["number"].as_i64().unwrap())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Posts `total` messages from `clients` tasks; returns per-request latency.
async fn blast(
    target: &Arc<Target>,
    total: usize,
    clients: usize,
) -> anyhow::Result<Vec<Duration>> {
    let tasks = (0..clients).map(|c| {
        let target = target.clone();
        let mine = total / clients + usize::from(c < total % clients);
        async move {
            let mut lat = Vec::with_capacity(mine);
            for i in 0..mine {
                let t = Instant::now();
                target
                    .post(&format!("bench message {c}/{i} with some text in it"))
                    .await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }
    });
    let mut all = Vec::with_capacity(total);
    for r in join_all(tasks).await {
        all.extend(r?);
    }
    Ok(all)
}

async fn post_mode(
    base: &str,
    messages: usize,
    clients: usize,
    lag_samples: usize,
) -> anyhow::Result<()> {
    let target = Arc::new(Target::new(base).await?);
    blast(&target, 500, clients).await?; // warm-up: connections, caches
    let started = Instant::now();
    let mut lat = blast(&target, messages, clients).await?;
    let elapsed = started.elapsed();
    lat.sort_unstable();
    println!(
        "POST message: {messages} requests, {clients} clients, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        messages as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3,
    );
    // Let the backlog drain so the lag samples measure an idle pipeline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut lags = Vec::with_capacity(lag_samples);
    for i in 0..lag_samples {
        let n = target.post(&format!("lag probe {i}")).await?;
        let accepted = Instant::now();
        let url = format!("{}?after={}&limit=1", target.messages(), n - 1);
        loop {
            let page: Value = target.http.get(&url).send().await?.json().await?;
            if page["items"].as_array().is_some_and(|a| !a.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lags.push(accepted.elapsed());
    }
    lags.sort_unstable();
    println!(
        "201 -> listed: {lag_samples} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&lags, 0.50).as_secs_f64() * 1e3,
        percentile(&lags, 0.99).as_secs_f64() * 1e3,
        lags.last().unwrap().as_secs_f64() * 1e3,
    );
    Ok(())
}

async fn decay_mode(
    base: &str,
    messages: usize,
    clients: usize,
    database_url: &str,
) -> anyhow::Result<()> {
    let target = Arc::new(Target::new(base).await?);
    let db = Database::connect(database_url).await?;
    let app = chat_store::repo::applications::find_by_token(&db, &target.token)
        .await?
        .expect("bench application exists")
        .id;
    let poster = {
        let target = target.clone();
        tokio::spawn(async move { blast(&target, messages, clients).await })
    };
    let tenth = (messages / 10) as u64;
    let started = Instant::now();
    // Time at which the persisted count first reached each tenth.
    let mut marks: Vec<Duration> = Vec::new();
    let deadline = started + Duration::from_secs(3_600);
    while marks.len() < 10 && Instant::now() < deadline {
        let count = chat_store::repo::messages::count(&db, app, 1).await?;
        while marks.len() < 10 && count >= tenth * (marks.len() as u64 + 1) {
            marks.push(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    poster.await??;
    anyhow::ensure!(
        marks.len() == 10,
        "not every message was persisted within the hour"
    );
    let rates: Vec<f64> = (0..10)
        .map(|i| {
            let from = if i == 0 { Duration::ZERO } else { marks[i - 1] };
            tenth as f64 / (marks[i] - from).as_secs_f64()
        })
        .collect();
    for (i, r) in rates.iter().enumerate() {
        println!(
            "tenth {:>2}: persisted {:>7} rows/s",
            i + 1,
            format!("{r:.0}")
        );
    }
    println!(
        "decay: {messages} messages in {:.1} s; first tenth {:.0}/s, last tenth {:.0}/s, last/first = {:.2}",
        marks[9].as_secs_f64(),
        rates[0],
        rates[9],
        rates[9] / rates[0]
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Post {
            messages,
            clients,
            lag_samples,
        } => post_mode(&cli.base, messages, clients, lag_samples).await,
        Mode::Decay {
            messages,
            clients,
            database_url,
        } => decay_mode(&cli.base, messages, clients, &database_url).await,
    }
}
