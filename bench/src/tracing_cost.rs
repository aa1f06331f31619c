//! What tracing costs on the distributed write path: the same POSTs and
//! drain with tracing off, sampling 1% and sampling 100%, in one run, each
//! on a fresh deployment. The spans go over OTLP/HTTP to a sink the bench
//! serves, which answers every export and drops it, so the figures are the
//! roles' own cost of making and sending spans.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::header, routing::post};

use crate::{
    client::ChatApi,
    load::closed_loop,
    run::{posting, wait_for_rows},
    system::{Deployment, free_port, quiet},
};

#[derive(Clone, Copy)]
pub enum Mode {
    Off,
    Ratio(f64),
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Off, Mode::Ratio(0.01), Mode::Ratio(1.0)];

    pub fn label(&self) -> String {
        match self {
            Mode::Off => "off".into(),
            Mode::Ratio(r) => format!("{}%", r * 100.0),
        }
    }

    fn env(&self, sink: &str) -> Vec<(&'static str, String)> {
        match self {
            Mode::Off => Vec::new(),
            Mode::Ratio(r) => vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", sink.to_owned()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".into()),
                ("OTEL_TRACES_SAMPLER_ARG", r.to_string()),
            ],
        }
    }
}

/// An OTLP/HTTP receiver that counts what it is sent and keeps nothing.
pub struct Sink {
    pub url: String,
    bytes: Arc<AtomicU64>,
}

impl Sink {
    pub async fn start() -> anyhow::Result<Self> {
        let bytes = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(bytes.clone());
        let port = free_port()?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            url: format!("http://127.0.0.1:{port}"),
            bytes,
        })
    }

    fn received(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

async fn receive(
    State(bytes): State<Arc<AtomicU64>>,
    body: Bytes,
) -> impl axum::response::IntoResponse {
    bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    // An empty ExportTraceServiceResponse: full success.
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        Vec::new(),
    )
}

pub struct Cost {
    pub mode: Mode,
    pub post_rps: f64,
    pub api_us_per_post: f64,
    pub worker_us_per_row: f64,
    pub exported_bytes: u64,
}

/// POSTs `requests` messages with no worker running, then drains them, on
/// `d` with tracing set as `mode`.
pub async fn measure(
    d: &Deployment,
    mode: Mode,
    sink: &Sink,
    requests: usize,
    chats: usize,
    concurrency: usize,
) -> anyhow::Result<Cost> {
    d.migrate()?;
    let db = d.connect().await?;
    let env = mode.env(&sink.url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let exported_before = sink.received();
    let port = free_port()?;
    let api = d.start_with("api", Some(port), &env)?;
    let client = ChatApi::new(&format!("http://127.0.0.1:{port}"), concurrency)?;
    client.wait_ready(Duration::from_secs(60)).await?;
    let (token, app) = client.create_app(chats).await?;
    let app_id = chat_store::repo::applications::find_by_token(&db, &token)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the bench application was not stored"))?
        .id;
    // Warm-up, unmeasured: connections, caches, the exporter's first batch.
    let warm = 2_000.min(requests);
    closed_loop(
        concurrency,
        warm,
        Duration::MAX,
        posting(&client, &app, 1..=chats, None),
    )
    .await?;
    quiet().await;
    eprintln!(
        "[tracing {}] POST {requests} messages, worker stopped",
        mode.label()
    );
    let before = api.cpu_secs()?;
    let post = closed_loop(
        concurrency,
        requests,
        Duration::MAX,
        posting(&client, &app, 1..=chats, None),
    )
    .await?
    .summary();
    let api_us_per_post = (api.cpu_secs()? - before) * 1e6 / requests as f64;
    quiet().await;
    eprintln!("[tracing {}] drain", mode.label());
    let mut worker = d.start_with("worker", None, &env)?;
    wait_for_rows(&db, app_id, (warm + requests) as i64, &mut worker).await?;
    let worker_us_per_row = worker.cpu_secs()? * 1e6 / (warm + requests) as f64;
    worker.stop(Duration::from_secs(30)).await?;
    api.stop(Duration::from_secs(30)).await?;
    Ok(Cost {
        mode,
        post_rps: post.per_sec,
        api_us_per_post,
        worker_us_per_row,
        exported_bytes: sink.received() - exported_before,
    })
}

/// Each mode's runs averaged, in the order of [`Mode::ALL`].
pub fn mean(costs: &[Cost]) -> Vec<Cost> {
    Mode::ALL
        .iter()
        .filter_map(|mode| {
            let runs: Vec<&Cost> = costs
                .iter()
                .filter(|c| c.mode.label() == mode.label())
                .collect();
            let n = runs.len() as f64;
            (!runs.is_empty()).then(|| Cost {
                mode: *mode,
                post_rps: runs.iter().map(|c| c.post_rps).sum::<f64>() / n,
                api_us_per_post: runs.iter().map(|c| c.api_us_per_post).sum::<f64>() / n,
                worker_us_per_row: runs.iter().map(|c| c.worker_us_per_row).sum::<f64>() / n,
                exported_bytes: runs.iter().map(|c| c.exported_bytes).sum::<u64>()
                    / runs.len() as u64,
            })
        })
        .collect()
}

pub fn print(costs: &[Cost]) {
    let Some(off) = costs.iter().find(|c| matches!(c.mode, Mode::Off)) else {
        return;
    };
    println!("\ntracing on the distributed profile (spans to an OTLP/HTTP sink that drops them)");
    println!(
        "  {:<10} {:>10} {:>16} {:>16} {:>12}",
        "sampling", "POST/s", "api µs/POST", "worker µs/row", "exported"
    );
    let mut result = String::from("RESULT mode=tracing profile=distributed");
    for c in costs {
        let post_cost = c.api_us_per_post / off.api_us_per_post - 1.0;
        let row_cost = c.worker_us_per_row / off.worker_us_per_row - 1.0;
        println!(
            "  {:<10} {:>10.0} {:>9.1} ({:+.0}%) {:>9.1} ({:+.0}%) {:>9.1} MB",
            c.mode.label(),
            c.post_rps,
            c.api_us_per_post,
            post_cost * 100.0,
            c.worker_us_per_row,
            row_cost * 100.0,
            c.exported_bytes as f64 / 1e6
        );
        let key = match c.mode {
            Mode::Off => "off".to_owned(),
            Mode::Ratio(r) => format!("p{}", r * 100.0),
        };
        result += &format!(
            " {key}_api_us_per_post={:.1} {key}_worker_us_per_row={:.1}",
            c.api_us_per_post, c.worker_us_per_row
        );
        if !matches!(c.mode, Mode::Off) {
            result += &format!(" {key}_post_cost={post_cost:.3} {key}_row_cost={row_cost:.3}");
        }
    }
    println!("{result}");
}
