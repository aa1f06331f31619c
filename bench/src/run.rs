//! One profile's whole run: the limits first, on a quiet machine, then
//! every scenario against the real system.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, Value};

use crate::{
    bare,
    client::{AppUrls, ChatApi, body},
    indexing::{self, Indexing, SearchServer},
    lag::Watch,
    limits::{self, RawInsert},
    load::{Request, closed_loop, open_loop},
    stats::{Samples, Summary},
    system::{Deployment, MachineCpu, OtherCpu, Process, free_port, quiet},
};

pub struct Options {
    pub concurrency: usize,
    /// Messages queued, then drained, for the persistence scenario.
    pub messages: usize,
    /// Of those, how many go to one hot chat.
    pub hot: usize,
    pub chats: usize,
    /// Requests in each of the other closed-loop runs.
    pub requests: usize,
    pub max_run: Duration,
    pub lag_run: Duration,
    /// The worker's settings, as the roles read them from the environment.
    pub batch_size: usize,
    pub linger: Duration,
    pub index_batch_size: usize,
    /// Writes in the decay run (embedded), 0 for none.
    pub decay_writes: usize,
    /// Documents in the indexing run (distributed, with a search server).
    pub index_docs: usize,
}

/// The decay run: the same closed loop over tenths of its writes, with
/// every role running.
pub struct Decay {
    pub writes: usize,
    /// Each tenth's POSTs per second.
    pub tenths: Vec<f64>,
    /// All of them taken in and persisted, per second.
    pub persisted_rps: f64,
}

impl Decay {
    pub fn ratio(&self) -> f64 {
        self.tenths.last().copied().unwrap_or(0.0) / self.tenths.first().copied().unwrap_or(1.0)
    }
}

pub struct Report {
    pub post: Summary,
    pub post_hot: Summary,
    pub post_limit: Summary,
    pub post_with_worker: Summary,
    pub get: Summary,
    /// The bare point select (distributed only).
    pub get_limit: Option<Summary>,
    pub index: Option<Indexing>,
    pub decay: Option<Decay>,
    pub drain: Duration,
    pub persist_rps: f64,
    pub raw: RawInsert,
    /// POSTs per second taken in and persisted, worker running.
    pub sustained_rps: f64,
    pub lag_rate: f64,
    pub lag: Summary,
    pub lag_bound_ms: f64,
    /// Mean time of one round of the watcher's lookups.
    pub lag_lookup: Duration,
    pub api_rss_mb: f64,
    pub worker_rss_mb: f64,
    /// The worker's (or `serve`'s) resident memory at the end: anonymous
    /// and file-backed.
    pub worker_rss_split_mb: (f64, f64),
    /// CPU of the api process per POST, worker stopped.
    pub api_cpu_us_per_post: f64,
    /// CPU of the worker process per row drained (its start-up included;
    /// on the embedded profile, `serve`'s idle API too).
    pub worker_cpu_us_per_row: f64,
    /// Machine-wide busy CPU (seconds, share of all CPUs) during the raw
    /// inserts and during the drain.
    pub raw_cpu: (f64, f64),
    pub drain_cpu: (f64, f64),
    /// The servers' and the load generator's CPU during the POST runs and
    /// during the drain.
    pub post_other_cpu: OtherCpu,
    pub drain_other_cpu: OtherCpu,
    /// The API's (or `serve`'s) CPU and the others' during the GET runs.
    pub get_cpu: (f64, OtherCpu),
}

pub fn posting(
    api: &ChatApi,
    app: &AppUrls,
    chats: std::ops::RangeInclusive<usize>,
    watch: Option<Watch>,
) -> Request {
    let (api, app) = (api.clone(), app.clone());
    let (first, spread) = (*chats.start(), chats.count().max(1));
    Arc::new(move |i| {
        let (api, app, watch) = (api.clone(), app.clone(), watch.clone());
        Box::pin(async move {
            let chat = first + i % spread;
            let number = api.post_message(&app, chat, &body(i)).await?;
            if let Some(w) = watch {
                w.accepted(chat as i64, number);
            }
            Ok(())
        })
    })
}

pub async fn run(d: &Deployment, o: &Options) -> anyhow::Result<Report> {
    let c = o.concurrency;
    d.migrate()?;
    let db = d.connect().await?;

    // Raw inserts, half before the pipeline's drain and half after it, so
    // the limit sees the same database states the drain does.
    let half = o.messages / 2;
    eprintln!("[{}] limit: raw bulk INSERTs of {half} rows", d.profile);
    let machine = MachineCpu::start();
    let raw_before = limits::raw_insert(&db, half, o.batch_size).await?;
    let raw_cpu_before = machine.busy();

    let limit = if d.profile == "embedded" {
        LimitServer::start(d, o, bare::Kind::GroupInsert).await?
    } else {
        LimitServer::start(d, o, bare::Kind::Incr).await?
    };
    let api_port = free_port()?;
    let mut api = d.start("api", Some(api_port))?;
    let mut client = ChatApi::new(&format!("http://127.0.0.1:{api_port}"), c)?;
    client.wait_ready(Duration::from_secs(60)).await?;
    let (token, app) = client.create_app(o.chats).await?;
    let app_id = chat_store::repo::applications::find_by_token(&db, &token)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the bench application was not stored"))?
        .id;

    // The queue fills with no worker running: the POST runs measure the
    // API alone, and the drain below measures the pipeline alone. They
    // alternate with runs against the bare handler, so that both see the
    // same machine: on a shared host its speed drifts within minutes.
    let many = 2..=o.chats;
    let spread = o.messages - o.hot;
    let mut post = Samples::default();
    let mut post_limit = Samples::default();
    let mut api_cpu = 0.0;
    let mut post_other_cpu = OtherCpu::default();
    limit.warm_up(o).await?;
    for round in 0..ROUNDS {
        quiet().await;
        eprintln!("[{}] round {}: bare handler", d.profile, round + 1);
        post_limit.add(limit.drive(o, o.requests / ROUNDS).await?);
        quiet().await;
        let count = spread / ROUNDS + if round == 0 { spread % ROUNDS } else { 0 };
        eprintln!(
            "[{}] round {}: POST {count} messages over {} chats, worker stopped",
            d.profile,
            round + 1,
            o.chats - 1
        );
        let before = api.cpu_secs()?;
        let others = OtherCpu::now();
        let request = posting(&client, &app, many.clone(), None);
        post.add(closed_loop(c, count, Duration::MAX, request).await?);
        api_cpu += api.cpu_secs()? - before;
        post_other_cpu = post_other_cpu.add(OtherCpu::since(others));
    }
    limit.stop().await?;
    let api_cpu_us_per_post = api_cpu * 1e6 / post.latencies.len() as f64;
    let (post, post_limit) = (post.summary(), post_limit.summary());
    quiet().await;
    eprintln!("[{}] POST {} messages to one chat", d.profile, o.hot);
    let post_hot = closed_loop(c, o.hot, Duration::MAX, posting(&client, &app, 1..=1, None))
        .await?
        .summary();
    api.ensure_running()?;
    let api_only_rss = api.peak_rss_mb()?;

    // The embedded profile is one process: `serve` runs every role, and
    // takes the API's place before the drain. Stopping the API is not the
    // pipeline's work, and its shutdown gives the bench's idle keep-alive
    // connections a lame-duck second (see the binary's `http`), so it
    // stops before the drain's clock starts.
    let api = if d.profile == "embedded" {
        api.stop(Duration::from_secs(30)).await?;
        None
    } else {
        Some(api)
    };
    quiet().await;
    eprintln!(
        "[{}] drain: start the worker on {} queued messages",
        d.profile, o.messages
    );
    let drain_started = Instant::now();
    let machine = MachineCpu::start();
    let others = OtherCpu::now();
    let mut worker = if d.profile == "embedded" {
        let port = free_port()?;
        let serve = d.start("serve", Some(port))?;
        client = ChatApi::new(&format!("http://127.0.0.1:{port}"), c)?;
        serve
    } else {
        d.start("worker", None)?
    };
    wait_for_rows(&db, app_id, o.messages as i64, &mut worker).await?;
    if d.profile == "embedded" {
        // `serve` indexes too: its drain ends when the index has caught up.
        wait_for_index_queue(&db, &mut worker).await?;
    }
    let drain = drain_started.elapsed();
    let drain_cpu = machine.busy();
    let drain_other_cpu = OtherCpu::since(others);
    let worker_cpu_us_per_row = worker.cpu_secs()? * 1e6 / o.messages as f64;
    client.wait_ready(Duration::from_secs(60)).await?;
    worker.ensure_running()?;

    quiet().await;
    eprintln!(
        "[{}] limit: raw bulk INSERTs of {} rows",
        d.profile,
        o.messages - half
    );
    let machine = MachineCpu::start();
    let raw = raw_before.add(limits::raw_insert(&db, o.messages - half, o.batch_size).await?);
    let raw_after_cpu = machine.busy();
    let raw_cpu = (
        raw_cpu_before.0 + raw_after_cpu.0,
        (raw_cpu_before.1 + raw_after_cpu.1) / 2.0,
    );

    quiet().await;
    eprintln!("[{}] POST with the worker running", d.profile);
    let steady_started = Instant::now();
    let post_with_worker = closed_loop(
        c,
        o.requests,
        o.max_run,
        posting(&client, &app, many.clone(), None),
    )
    .await?
    .summary();
    let total = o.messages + post_with_worker.count;
    wait_for_rows(&db, app_id, total as i64, &mut worker).await?;
    if d.profile == "embedded" {
        // The intake writes the rows; taken in also means indexed.
        wait_for_index_queue(&db, &mut worker).await?;
    }
    // Sustained means taken in and persisted: the POST rate alone can
    // outrun the worker for a while by growing the queue.
    let sustained_rps = post_with_worker.count as f64 / steady_started.elapsed().as_secs_f64();

    quiet().await;
    let lag_rate = (sustained_rps / 2.0).max(1.0);
    eprintln!(
        "[{}] lag at {lag_rate:.0} POST/s, half the sustained rate",
        d.profile
    );
    let watch = Watch::default();
    let (done, until) = tokio::sync::oneshot::channel();
    let poller = {
        let (watch, db) = (watch.clone(), db.clone());
        tokio::spawn(async move {
            watch
                .poll(&db, app_id, until, Duration::from_secs(120))
                .await
        })
    };
    let sent = open_loop(
        lag_rate,
        o.lag_run,
        c * 4,
        posting(&client, &app, many.clone(), Some(watch)),
    )
    .await;
    let _ = done.send(());
    let (lags, lag_lookup) = poller.await??;
    sent?;
    let lag = Summary::of(lags, Duration::ZERO);

    let serving = api.as_ref().unwrap_or(&worker);
    let (get, get_limit, get_cpu) = get_runs(d, o, &client, &app, serving).await?;

    let decay = if d.profile == "embedded" && o.decay_writes > 0 {
        Some(decay_run(d, o, &client, &app, &db, app_id, &mut worker).await?)
    } else {
        None
    };
    worker.ensure_running()?;
    let worker_rss_mb = worker.peak_rss_mb()?;
    let worker_rss_split_mb = worker.rss_split_mb()?;
    let api_rss_mb = match &api {
        Some(api) => api.peak_rss_mb()?,
        None => api_only_rss,
    };
    worker.stop(Duration::from_secs(30)).await?;
    // Split roles only: `serve` indexes into its own tantivy index.
    let server = if api.is_some() && o.index_docs > 0 {
        SearchServer::find(&d.work).await?
    } else {
        None
    };
    let index = match server {
        Some(server) => Some(indexing::measure(d, &server, o, &client, &app, o.index_docs).await?),
        None => None,
    };
    if let Some(api) = api {
        api.stop(Duration::from_secs(30)).await?;
    }
    Ok(Report {
        post,
        post_hot,
        post_limit,
        post_with_worker,
        get,
        get_limit,
        index,
        decay,
        persist_rps: o.messages as f64 / drain.as_secs_f64(),
        drain,
        lag_bound_ms: 3.0 * o.linger.as_secs_f64() * 1e3 + raw.batch_ms(),
        raw,
        sustained_rps,
        lag_rate,
        lag,
        lag_lookup,
        api_rss_mb,
        worker_rss_mb,
        worker_rss_split_mb,
        api_cpu_us_per_post,
        get_cpu,
        worker_cpu_us_per_row,
        raw_cpu,
        drain_cpu,
        post_other_cpu,
        drain_other_cpu,
    })
}

/// Alternating limit and API runs, this many of each.
const ROUNDS: usize = 3;

/// The bare handler, as its own process, driven by the same generator on
/// the same path shape as the API.
struct LimitServer {
    server: Process,
    client: ChatApi,
    app: AppUrls,
}

impl LimitServer {
    async fn start(d: &Deployment, o: &Options, kind: bare::Kind) -> anyhow::Result<Self> {
        let port = free_port()?;
        let (url, key) = match kind {
            bare::Kind::Incr => (
                d.redis_url.clone().unwrap_or_default(),
                format!("{}limit", d.env_value("REDIS_PREFIX")),
            ),
            bare::Kind::GroupInsert => (
                format!("sqlite://{}?mode=rwc", d.work.join("limit.db").display()),
                String::new(),
            ),
            bare::Kind::PointSelect => (d.database_url.clone(), String::new()),
        };
        let kind = clap::ValueEnum::to_possible_value(&kind)
            .expect("every kind has a name")
            .get_name()
            .to_owned();
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.args([
            "limit-server",
            "--kind",
            &kind,
            "--url",
            &url,
            "--key",
            &key,
            "--port",
            &port.to_string(),
        ]);
        let mut server = Process::spawn(&format!("{}-limit", d.profile), command, &d.work)?;
        let wait = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            server.ensure_running()?;
            anyhow::ensure!(
                tokio::time::Instant::now() < wait,
                "the limit server never listened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            server,
            client: ChatApi::new(&format!("http://127.0.0.1:{port}"), o.concurrency)?,
            app: AppUrls::at("/api/v1/applications/limit/chats"),
        })
    }

    /// Opens the connections and warms the server up, unmeasured.
    async fn warm_up(&self, o: &Options) -> anyhow::Result<()> {
        self.drive(o, 1_000).await.map(|_| ())
    }

    async fn drive(&self, o: &Options, requests: usize) -> anyhow::Result<Samples> {
        let request = posting(&self.client, &self.app, 1..=o.chats, None);
        closed_loop(o.concurrency, requests, o.max_run, request).await
    }

    /// GETs of these rows by primary key, spread as the API's are.
    async fn drive_get(
        &self,
        o: &Options,
        requests: usize,
        ids: &Arc<Vec<i64>>,
    ) -> anyhow::Result<Samples> {
        anyhow::ensure!(!ids.is_empty(), "no persisted message to read");
        let (api, app, ids) = (self.client.clone(), self.app.clone(), ids.clone());
        let request: Request = Arc::new(move |i| {
            let (api, app) = (api.clone(), app.clone());
            let id = ids[i.wrapping_mul(7919) % ids.len()];
            Box::pin(async move { api.get_message(&app, 1, id).await })
        });
        closed_loop(o.concurrency, requests, o.max_run, request).await
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.server.stop(Duration::from_secs(5)).await
    }
}

/// The primary keys of the first `limit` messages. Not `1..=limit`: an
/// upsert's repeated or conflicting rows use up auto-increment values too.
async fn message_ids(d: &Deployment, limit: usize) -> anyhow::Result<Vec<i64>> {
    let db = d.connect().await?;
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT id FROM messages ORDER BY id LIMIT ?",
            [Value::from(limit as i64)],
        ))
        .await?;
    rows.iter().map(|r| Ok(r.try_get_by_index(0)?)).collect()
}

/// Waits until the table holds `want` rows of the application. Counting
/// is a scan, so it polls at half the expected time left (5–250 ms): a few
/// counts per drain instead of a steady load on the database it measures.
pub async fn wait_for_rows(
    db: &DatabaseConnection,
    app_id: i64,
    want: i64,
    worker: &mut Process,
) -> anyhow::Result<()> {
    let backend = db.get_database_backend();
    let started = Instant::now();
    let give_up = started + Duration::from_secs(1_800);
    let first = count_rows(db, backend, app_id).await?;
    loop {
        let have = count_rows(db, backend, app_id).await?;
        if have >= want {
            return Ok(());
        }
        worker.ensure_running()?;
        anyhow::ensure!(
            Instant::now() < give_up,
            "only {have} of {want} rows persisted"
        );
        let done = (have - first).max(0) as f64;
        let left = (want - have) as f64;
        let wait = if done > 0.0 {
            started.elapsed().mul_f64(left / done / 2.0)
        } else {
            Duration::from_millis(50)
        };
        tokio::time::sleep(wait.clamp(Duration::from_millis(5), Duration::from_millis(250))).await;
    }
}

/// Waits until the embedded index queue holds no live job.
async fn wait_for_index_queue(db: &DatabaseConnection, worker: &mut Process) -> anyhow::Result<()> {
    let give_up = Instant::now() + Duration::from_secs(1_800);
    loop {
        let live = count(
            db,
            Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) FROM queue_jobs WHERE queue = 'index' AND dead = 0",
            ),
        )
        .await?;
        if live == 0 {
            return Ok(());
        }
        worker.ensure_running()?;
        anyhow::ensure!(Instant::now() < give_up, "{live} index jobs never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GETs of persisted messages; on the distributed profile alternated with
/// runs against the bare point select, so that both see the same machine.
/// Also the CPU that `serving` and the others spent on the GETs.
async fn get_runs(
    d: &Deployment,
    o: &Options,
    client: &ChatApi,
    app: &AppUrls,
    serving: &Process,
) -> anyhow::Result<(Summary, Option<Summary>, (f64, OtherCpu))> {
    let chats = o.chats - 1;
    let per_chat = ((o.messages - o.hot) / chats).max(1);
    let request: Request = {
        let (api, app) = (client.clone(), app.clone());
        Arc::new(move |i| {
            let (api, app) = (api.clone(), app.clone());
            Box::pin(async move {
                let number = 1 + ((i / chats) % per_chat) as i64;
                api.get_message(&app, 2 + i % chats, number).await
            })
        })
    };
    if d.profile == "embedded" {
        quiet().await;
        eprintln!("[{}] GET persisted messages", d.profile);
        let (before, others) = (serving.cpu_secs()?, OtherCpu::now());
        let get = closed_loop(o.concurrency, o.requests, o.max_run, request).await?;
        let cpu = (serving.cpu_secs()? - before, OtherCpu::since(others));
        return Ok((get.summary(), None, cpu));
    }
    let limit = LimitServer::start(d, o, bare::Kind::PointSelect).await?;
    let ids = Arc::new(message_ids(d, o.messages).await?);
    limit.drive_get(o, 1_000, &ids).await?;
    let (mut get, mut bare) = (Samples::default(), Samples::default());
    let mut cpu = (0.0, OtherCpu::default());
    for round in 0..ROUNDS {
        quiet().await;
        eprintln!("[{}] round {}: bare point select", d.profile, round + 1);
        bare.add(limit.drive_get(o, o.requests / ROUNDS, &ids).await?);
        quiet().await;
        eprintln!(
            "[{}] round {}: GET persisted messages",
            d.profile,
            round + 1
        );
        let (before, others) = (serving.cpu_secs()?, OtherCpu::now());
        get.add(
            closed_loop(
                o.concurrency,
                o.requests / ROUNDS,
                o.max_run,
                request.clone(),
            )
            .await?,
        );
        cpu.0 += serving.cpu_secs()? - before;
        cpu.1 = cpu.1.add(OtherCpu::since(others));
    }
    limit.stop().await?;
    Ok((get.summary(), Some(bare.summary()), cpu))
}

/// `o.decay_writes` POSTs in tenths, every role running, then until all
/// of them are persisted and indexed.
async fn decay_run(
    d: &Deployment,
    o: &Options,
    client: &ChatApi,
    app: &AppUrls,
    db: &DatabaseConnection,
    app_id: i64,
    worker: &mut Process,
) -> anyhow::Result<Decay> {
    quiet().await;
    let before = count_rows(db, db.get_database_backend(), app_id).await?;
    let started = Instant::now();
    let tenth = (o.decay_writes / 10).max(1);
    let mut tenths = Vec::with_capacity(10);
    for k in 0..10 {
        eprintln!(
            "[{}] decay: tenth {} of {} writes",
            d.profile,
            k + 1,
            o.decay_writes
        );
        let request = posting(client, app, 2..=o.chats, None);
        let run = closed_loop(o.concurrency, tenth, Duration::MAX, request).await?;
        tenths.push(run.summary().per_sec);
    }
    let writes = tenth * 10;
    wait_for_rows(db, app_id, before + writes as i64, worker).await?;
    wait_for_index_queue(db, worker).await?;
    Ok(Decay {
        writes,
        tenths,
        persisted_rps: writes as f64 / started.elapsed().as_secs_f64(),
    })
}

async fn count_rows(
    db: &DatabaseConnection,
    backend: sea_orm::DbBackend,
    app_id: i64,
) -> anyhow::Result<i64> {
    count(
        db,
        Statement::from_sql_and_values(
            backend,
            "SELECT COUNT(*) FROM messages WHERE application_id = ?",
            [app_id.into()],
        ),
    )
    .await
}

/// The one number a `SELECT COUNT(*)` answers.
pub async fn count(db: &DatabaseConnection, statement: Statement) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(statement)
        .await?
        .ok_or_else(|| anyhow::anyhow!("COUNT returned no row"))?;
    Ok(row.try_get_by_index(0)?)
}
