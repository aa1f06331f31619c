//! Search benchmark: bulk-indexing throughput and query latency over one
//! chat of `docs` messages, on the backend itself; then, over HTTP on a
//! running deployment, how long after its 201 a message is searchable.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use chat_search as search;
use chat_search::{ChatKey, SearchConfig, SearchIndex, Target};
use chat_store::model::MessageRow;
use serde_json::Value;

use crate::{
    client::ChatApi,
    load::{self, Request},
    stats::Summary,
    system::{Deployment, free_port},
};

pub struct Options {
    pub docs: usize,
    /// Rows per bulk call, as the worker batches them.
    pub batch: usize,
    pub queries: usize,
    pub concurrency: usize,
    pub probes: usize,
    pub probe_rate: f64,
    pub background_rate: f64,
}

pub struct BackendReport {
    pub kind: &'static str,
    pub docs_per_sec: f64,
    pub bulk_p99_ms: f64,
    pub serial: Summary,
    pub concurrent: Summary,
}

/// Words of the synthetic messages: a vocabulary of 2,000 pronounceable
/// words, so prefixes and infixes hit realistic numbers of documents.
fn word(i: usize) -> String {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ne", "su", "ra", "to", "vi", "be", "do", "fa", "gu", "ha", "je", "po",
        "ri",
    ];
    let mut w = String::new();
    let mut n = i % 2_000 + 16;
    while n > 0 {
        w.push_str(SYLLABLES[n % 16]);
        n /= 16;
    }
    w
}

fn body(i: usize) -> String {
    // A fixed mix per message; multiplying spreads words over the vocabulary.
    (0..8)
        .map(|k| word(i.wrapping_mul(2_654_435_761).wrapping_add(k * 7_919) >> 3))
        .collect::<Vec<_>>()
        .join(" ")
}

fn rows(docs: usize) -> Vec<MessageRow> {
    let now = chrono::Utc::now();
    (1..=docs)
        .map(|n| MessageRow {
            application_id: 1,
            chat_number: 1,
            number: n as i64,
            body: body(n),
            version: n as i64,
            created_at: now,
            updated_at: now,
        })
        .collect()
}

/// Queries of the kinds clients send: a whole word, a 3-letter prefix, a
/// 4-letter infix, two words, a single letter.
fn query(i: usize) -> String {
    let w = word(i * 31);
    let chars: Vec<char> = w.chars().collect();
    match i % 5 {
        0 => w,
        1 => chars[..3.min(chars.len())].iter().collect(),
        2 => chars[1..5.min(chars.len())].iter().collect(),
        3 => format!("{w} {}", word(i * 17)),
        _ => chars[..1].iter().collect(),
    }
}

pub async fn backend(config: &SearchConfig, o: &Options) -> anyhow::Result<BackendReport> {
    let index: Arc<dyn SearchIndex> = search::open(config).await?;
    index.ensure().await?;
    let rows = rows(o.docs);
    let started = Instant::now();
    let mut bulk = Vec::new();
    for chunk in rows.chunks(o.batch.max(1)) {
        let t = Instant::now();
        index.index(&Target::Live, chunk).await?;
        bulk.push(t.elapsed());
    }
    let indexing = started.elapsed();
    if let SearchConfig::Elasticsearch { url, alias, .. } = config {
        reqwest::Client::new()
            .post(format!("{url}/{alias}/_refresh"))
            .send()
            .await?
            .error_for_status()?;
    }
    let counted = index
        .counts(&[ChatKey {
            application_id: 1,
            chat_number: 1,
        }])
        .await?;
    anyhow::ensure!(
        counted == [o.docs as u64],
        "indexed {counted:?} of {}",
        o.docs
    );
    let bulk = Summary::of(bulk, Duration::ZERO);
    let search = |index: Arc<dyn SearchIndex>| -> Request {
        Arc::new(move |i| {
            let index = index.clone();
            Box::pin(async move {
                let chat = ChatKey {
                    application_id: 1,
                    chat_number: 1,
                };
                index.search(chat, &query(i), 20, None).await?;
                Ok(())
            })
        })
    };
    let serial = load::closed_loop(1, o.queries, Duration::from_secs(60), search(index.clone()))
        .await?
        .summary();
    let concurrent = load::closed_loop(
        o.concurrency,
        o.queries * 4,
        Duration::from_secs(60),
        search(index.clone()),
    )
    .await?
    .summary();
    Ok(BackendReport {
        kind: index.kind(),
        docs_per_sec: o.docs as f64 / indexing.as_secs_f64(),
        bulk_p99_ms: bulk.p99_ms,
        serial,
        concurrent,
    })
}

/// Messages posted at `probe_rate`, on top of a background load, each with
/// a word of its own; one watcher searches for every probe not yet found,
/// in rounds, and records the time from its 201 to the round that found
/// it. The watcher's round time bounds the resolution.
pub async fn searchable_lag(d: &Deployment, o: &Options) -> anyhow::Result<(Summary, Duration)> {
    let port = free_port()?;
    let mut serve = d.start("serve", Some(port))?;
    let base = format!("http://127.0.0.1:{port}");
    let api = ChatApi::new(&base, 64)?;
    api.wait_ready(Duration::from_secs(60)).await?;
    let (token, urls) = api.create_app(2).await?;
    let http = reqwest::Client::new();
    let accepted: Arc<std::sync::Mutex<Vec<(usize, Instant)>>> = Default::default();

    let background = {
        let (api, urls) = (api.clone(), urls.clone());
        let secs = o.probes as f64 / o.probe_rate;
        let request: Request = Arc::new(move |i| {
            let (api, urls) = (api.clone(), urls.clone());
            Box::pin(async move {
                api.post_message(&urls, 2, &body(i)).await?;
                Ok(())
            })
        });
        tokio::spawn(load::open_loop(
            o.background_rate,
            Duration::from_secs_f64(secs),
            256,
            request,
        ))
    };
    let probes = {
        let (api, urls, accepted) = (api.clone(), urls.clone(), accepted.clone());
        let request: Request = Arc::new(move |i| {
            let (api, urls, accepted) = (api.clone(), urls.clone(), accepted.clone());
            Box::pin(async move {
                api.post_message(&urls, 1, &format!("probe{i:06}x {}", body(i)))
                    .await?;
                accepted.lock().unwrap().push((i, Instant::now()));
                Ok(())
            })
        });
        tokio::spawn(load::open_loop(
            o.probe_rate,
            Duration::from_secs_f64(o.probes as f64 / o.probe_rate),
            64,
            request,
        ))
    };

    let mut lags = Vec::with_capacity(o.probes);
    let mut rounds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while lags.len() < o.probes {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} probes found",
            lags.len(),
            o.probes
        );
        let waiting: Vec<(usize, Instant)> = accepted.lock().unwrap().clone();
        let round = Instant::now();
        let mut found = Vec::new();
        for (i, at) in &waiting {
            let url = format!(
                "{base}/api/v1/applications/{token}/chats/1/messages/search?q=probe{i:06}x&limit=1"
            );
            let page: Value = http.get(&url).send().await?.json().await?;
            if page["items"].as_array().is_some_and(|a| !a.is_empty()) {
                lags.push(at.elapsed());
                found.push(*i);
            }
        }
        rounds.push(round.elapsed());
        accepted.lock().unwrap().retain(|(i, _)| !found.contains(i));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    probes.await??;
    background.await??;
    serve
        .ensure_running()
        .context("serve died during the lag run")?;
    serve.stop(Duration::from_secs(20)).await?;
    rounds.sort_unstable();
    let round_p50 = rounds.get(rounds.len() / 2).copied().unwrap_or_default();
    Ok((Summary::of(lags, Duration::ZERO), round_p50))
}

pub fn print_backend(r: &BackendReport, o: &Options) {
    println!(
        "search backend {}: {} docs in one chat, bulk of {}",
        r.kind, o.docs, o.batch
    );
    println!(
        "  indexing      {:>10.0} docs/s   bulk call p99 {:.1} ms",
        r.docs_per_sec, r.bulk_p99_ms
    );
    let many = format!("search c={}", o.concurrency);
    for (name, s) in [("search c=1", &r.serial), (many.as_str(), &r.concurrent)] {
        println!(
            "  {name:<13} {:>10.0} q/s      p50 {:.2} ms  p99 {:.2} ms  max {:.1} ms",
            s.per_sec, s.p50_ms, s.p99_ms, s.max_ms
        );
    }
}

pub fn print_lag(profile: &str, lag: &Summary, round: Duration, o: &Options) {
    println!(
        "searchable after 201 [{profile}]: {} probes at {}/s over {}/s of other writes: \
         p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  (watcher round p50 {:.0} ms)",
        lag.count,
        o.probe_rate,
        o.background_rate,
        lag.p50_ms,
        lag.p99_ms,
        lag.max_ms,
        round.as_secs_f64() * 1e3
    );
}
