//! What tracing costs on the distributed write path: the same POSTs, taken
//! in and persisted, with tracing off, sampling 1% and sampling 100%, on
//! three deployments running side by side (see [`measure`]). Each mode's
//! spans go over OTLP/HTTP to a sink of its own that the bench serves,
//! which answers every export and drops it, so the figures are the roles'
//! own cost of making and sending spans.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::header, routing::post};

use sea_orm::DatabaseConnection;

use crate::{
    client::{AppUrls, ChatApi},
    load::closed_loop,
    run::{posting, wait_for_rows},
    system::{Deployment, Process, free_port, quiet},
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
struct Sink {
    url: String,
    bytes: Arc<AtomicU64>,
}

impl Sink {
    async fn start() -> anyhow::Result<Self> {
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

/// One mode's deployment, its API and worker running, and what the
/// measured phase has cost it so far.
struct Side {
    mode: Mode,
    sink: Sink,
    db: DatabaseConnection,
    app_id: i64,
    client: ChatApi,
    app: AppUrls,
    api: Process,
    worker: Process,
    posted: usize,
    posting: Duration,
}

/// The exporter's batch processor sends what it holds at least this often
/// (`OTEL_BSP_SCHEDULE_DELAY`'s default, 5 s, and a margin), so waiting
/// this long after the last POST bills each mode for all of its exports.
const EXPORT_FLUSH: Duration = Duration::from_secs(6);

/// Starts `mode`'s roles on `d`, and sends `warm` unmeasured POSTs through
/// them: connections, caches, the exporter's first batch.
async fn start(
    d: &Deployment,
    mode: Mode,
    chats: usize,
    concurrency: usize,
    warm: usize,
) -> anyhow::Result<Side> {
    d.migrate()?;
    let db = d.connect().await?;
    let sink = Sink::start().await?;
    let env = mode.env(&sink.url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let port = free_port()?;
    let api = d.start_with("api", Some(port), &env)?;
    let mut worker = d.start_with("worker", None, &env)?;
    let client = ChatApi::new(&format!("http://127.0.0.1:{port}"), concurrency)?;
    client.wait_ready(Duration::from_secs(60)).await?;
    let (token, app) = client.create_app(chats).await?;
    let app_id = chat_store::repo::applications::find_by_token(&db, &token)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the bench application was not stored"))?
        .id;
    closed_loop(
        concurrency,
        warm,
        Duration::MAX,
        posting(&client, &app, 1..=chats, None),
    )
    .await?;
    wait_for_rows(&db, app_id, warm as i64, &mut worker).await?;
    Ok(Side {
        mode,
        sink,
        db,
        app_id,
        client,
        app,
        api,
        worker,
        posted: warm,
        posting: Duration::ZERO,
    })
}

/// Every mode in [`Mode::ALL`] on its own deployment in `deployments`, side
/// by side: `requests` POSTs per mode, taken in and persisted with the
/// worker running, sent to the modes in `turns` turns of `requests /
/// turns` each, with the first mode of each turn rotating and each turn
/// persisted before the next begins. A drift in the machine's speed
/// (tracing off alone measured 63 to 103 µs per POST on fresh deployments
/// minutes apart) then bills every mode alike. Each role's CPU is counted
/// over the whole measured phase and the exports that follow it, so the
/// export thread's work is billed to its mode whenever it ran.
pub async fn measure(
    deployments: &[Deployment],
    requests: usize,
    turns: usize,
    chats: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Cost>> {
    let mut sides = Vec::new();
    for (d, mode) in deployments.iter().zip(Mode::ALL) {
        eprintln!(
            "[tracing {}] starting api and worker, warming up",
            mode.label()
        );
        sides.push(start(d, mode, chats, concurrency, 2_000.min(requests)).await?);
    }
    quiet().await;
    let turns = turns.clamp(1, requests.max(1));
    let per_turn = requests / turns;
    let cpu_before: Vec<(f64, f64)> = sides
        .iter()
        .map(|s| Ok((s.api.cpu_secs()?, s.worker.cpu_secs()?)))
        .collect::<anyhow::Result<_>>()?;
    let exported_before: Vec<u64> = sides.iter().map(|s| s.sink.received()).collect();
    eprintln!("[tracing] {turns} turns of {per_turn} POSTs per mode, workers running");
    let n = sides.len();
    for turn in 0..turns {
        for k in 0..n {
            let side = &mut sides[(turn + k) % n];
            let samples = closed_loop(
                concurrency,
                per_turn,
                Duration::MAX,
                posting(&side.client, &side.app, 1..=chats, None),
            )
            .await?;
            side.posted += per_turn;
            side.posting += samples.elapsed;
            // The next mode's turn starts once this one is persisted, so
            // no turn runs beside another mode's drain: the mode that
            // follows 100% would otherwise share the cores with its tail.
            wait_for_rows(&side.db, side.app_id, side.posted as i64, &mut side.worker).await?;
        }
    }
    tokio::time::sleep(EXPORT_FLUSH).await;
    let mut costs = Vec::new();
    for ((side, (api0, worker0)), exported0) in
        sides.into_iter().zip(cpu_before).zip(exported_before)
    {
        let measured = (per_turn * turns) as f64;
        costs.push(Cost {
            mode: side.mode,
            post_rps: measured / side.posting.as_secs_f64().max(1e-9),
            api_us_per_post: (side.api.cpu_secs()? - api0) * 1e6 / measured,
            worker_us_per_row: (side.worker.cpu_secs()? - worker0) * 1e6 / measured,
            exported_bytes: side.sink.received() - exported0,
        });
        side.worker.stop(Duration::from_secs(30)).await?;
        side.api.stop(Duration::from_secs(30)).await?;
    }
    Ok(costs)
}

pub fn print(costs: &[Cost]) {
    let Some(off) = costs.iter().find(|c| matches!(c.mode, Mode::Off)) else {
        return;
    };
    println!(
        "\ntracing on the distributed profile, side by side, workers running (spans to OTLP/HTTP sinks that drop them)"
    );
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
