//! One scenario from start to report: servers, roles, setup, load under
//! the timeline, the check, and the teardown.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::task::JoinHandle;

use crate::{
    Config, FaultRow, Report,
    check::{self, Tally},
    client::{Api, queue_jobs},
    flag::Flag,
    inject::Injector,
    load::{Load, spawn_clients},
    probe::{Probe, Prober},
    processes::{WorkDir, free_port},
    record::{Book, Ledger, Tag, Window, Windows},
    roles::{self, Roles, Supervision, Supervisor},
    servers::{MariaDb, Redis, Search, Servers},
};

/// The alias searches go through unless `SEARCH_INDEX` says otherwise.
const DEFAULT_ALIAS: &str = "chat-messages";

/// Runs the scenario and reports what it found. `Err` means the scenario
/// could not run (a server would not start, setup failed), not that the
/// system misbehaved: that is in the report.
pub async fn run(config: Config) -> Result<Report> {
    for (what, path) in [
        ("chat binary", &config.chat_bin),
        ("osmem-server", &config.osmem_server),
    ] {
        anyhow::ensure!(path.is_file(), "{what} not found at {}", path.display());
    }
    let started = Instant::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    // Declared first, so it is removed last, after every process in it is
    // killed.
    let dir = WorkDir::create(&run_id, config.keep_dir)?;
    let path = dir.path.clone();
    eprintln!("chat-faults: run {run_id} in {}", path.display());

    let (redis_port, db_port, search_port) = (free_port()?, free_port()?, free_port()?);
    let (redis, (), search) = tokio::try_join!(
        Redis::start(&path, redis_port),
        MariaDb::install(&path),
        Search::start(&path, &config.osmem_server, search_port),
    )?;
    let db = MariaDb::start(&path, db_port).await?;
    db.sql("CREATE DATABASE chat CHARACTER SET utf8mb4").await?;
    let env = role_env(&config, redis_port, db_port, &search.url);
    let alias = env
        .iter()
        .rev()
        .find(|(k, _)| k == "SEARCH_INDEX")
        .map_or(DEFAULT_ALIAS.to_owned(), |(_, v)| v.clone());
    roles::migrate(&config.chat_bin, &env, &path).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let roles = Roles::start(&config.chat_bin, &env, &path, &http).await?;
    let mut api = Api::new(roles.api_bases(), config.request_timeout)?;
    let mut chats = api.setup(config.chats + 1).await?;
    let probe_chat = chats.pop().context("no chat for the probes")?;
    let api = Arc::new(api);
    let redis_before = redis.stats().await?;
    let setup_secs = started.elapsed().as_secs_f64();
    eprintln!("chat-faults: set up in {setup_secs:.1}s; load starts");

    let t0 = Instant::now();
    let timeline = &config.timeline;
    let ledger = Arc::new(Ledger::default());
    let windows = Arc::new(Windows::new(t0));
    let prober = Arc::new(Prober::new(api.clone(), ledger.clone(), probe_chat, t0));
    let stop = Flag::new();
    let outage_seen = Arc::new(std::sync::Mutex::new(None));
    let searched = timeline.search_outage > Duration::ZERO;
    let injector = Guarded::spawn(
        Injector {
            servers: Servers { redis, db, search },
            windows: windows.clone(),
            prober: prober.clone(),
            t0,
            stop: stop.clone(),
            workers: roles.worker_bases(),
            http: http.clone(),
            outage_seen: outage_seen.clone(),
        }
        .run(timeline.plan()),
    );
    let supervisor = Guarded::spawn(
        Supervisor {
            roles,
            every: timeline.worker_kill_every,
            windows: windows.clone(),
            prober: prober.clone(),
            t0,
            stop: stop.clone(),
            finish: prober.finish.clone(),
        }
        .run(),
    );
    let load = Arc::new(Load {
        api: api.clone(),
        ledger: ledger.clone(),
        chats: Arc::new(chats.clone()),
        clients: config.clients,
        target: config.target_writes,
        max_rate: config.max_rate,
        run_id: run_id.clone(),
        t0,
        stop: stop.clone(),
        target_reached: Flag::new(),
        abandon: Flag::new(),
    });
    let clients: Vec<Guarded<()>> = spawn_clients(load.clone())
        .into_iter()
        .map(|h| Guarded(Some(h)))
        .collect();

    // The faults end early only by failing (a server that would not come
    // back, a panic): stop the load then, rather than write on for the
    // rest of the timeline against servers that are gone.
    tokio::select! {
        _ = tokio::time::sleep(timeline.load()) => {}
        _ = load.target_reached.wait() => {}
        _ = injector.finished() => {
            eprintln!("chat-faults: the fault injector ended early; stopping the load");
        }
    }
    stop.set();
    let load_secs = t0.elapsed().as_secs_f64();
    eprintln!("chat-faults: load stopped at {load_secs:.1}s");
    let deadline = Instant::now() + timeline.drain;
    while clients.iter().any(|c| !c.is_finished()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.abandon.set();
    for client in clients {
        client.join().await?;
    }
    let servers = injector.join().await??;

    eprintln!("chat-faults: waiting for every acknowledged write to be listed");
    let all_listed_after = check::wait_listed(&api, &ledger, timeline.settle, timeline.stall).await;
    prober.writes_closed.set();
    prober
        .writes_settled(config.request_timeout + Duration::from_secs(5))
        .await;
    let mut all_chats = chats;
    all_chats.push(probe_chat);
    let listing = check::list_everything(&api, &all_chats).await?;
    let (told, unresolved) = ledger.with(|b| (b.told.clone(), b.unresolved.clone()));
    let tally = check::compare(&told, &unresolved, &listing);

    eprintln!(
        "chat-faults: waiting for search to index {} messages",
        tally.listed
    );
    let search_started = Instant::now();
    let (indexed, indexed_after) = check::wait_indexed(
        &servers.search,
        &api,
        &alias,
        tally.listed,
        timeline.search_settle,
        timeline.stall,
    )
    .await;
    let layout = servers.search.layout(&alias).await.ok();
    eprintln!(
        "chat-faults: search check done in {:.1}s",
        search_started.elapsed().as_secs_f64()
    );
    prober.finish.set();
    let probes = prober.results().await;
    let (roles, supervision) = supervisor.join().await?;
    let redis_after = servers.redis.stats().await.unwrap_or_default();
    let dead_jobs = save_metrics(&http, &roles, &path).await;
    // Everything is killed here, before the report is built and the work
    // dir goes.
    drop(roles);
    drop(servers);

    let windows = windows.snapshot();
    let book = Arc::try_unwrap(ledger).map_or_else(|l| l.with(std::mem::take), Ledger::into_book);
    let mut report = build(
        &book,
        &windows,
        &probes,
        &tally,
        timeline.tick.as_secs_f64(),
    );
    report.run_id = run_id;
    report.work_dir = dir.keep.then(|| dir.path.clone());
    // Removed here rather than on return, so the total covers the whole
    // teardown.
    let removing = Instant::now();
    drop(dir);
    if report.work_dir.is_none() {
        eprintln!(
            "chat-faults: work dir removed in {:.1}s",
            removing.elapsed().as_secs_f64()
        );
    }
    report.setup_secs = setup_secs;
    report.load_secs = load_secs;
    report.all_listed_after = all_listed_after;
    report.indexed = indexed;
    report.indexed_after = indexed_after;
    if let Some((is_alias, indices)) = layout {
        report.search_alias = Some(is_alias);
        report.search_indices = indices;
    }
    report.redis_before = redis_before;
    report.redis_after = redis_after;
    report.search_outage_reported = searched.then(|| outage_seen.lock().unwrap().clone());
    report.dead_jobs = dead_jobs;
    report_restart_errors(&supervision);
    report.worker_kills = supervision.worker_kills;
    report.self_exits = supervision.self_exits;
    report.total_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The environment every role gets, as the brief of the distributed
/// profile has it; the caller's extras last, so they win.
fn role_env(config: &Config, redis: u16, db: u16, search_url: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("DATABASE_URL", format!("mysql://root@127.0.0.1:{db}/chat")),
        ("REDIS_URL", format!("redis://127.0.0.1:{redis}")),
        ("ELASTICSEARCH_URL", search_url.to_owned()),
        ("REDIS_PREFIX", "chat:".into()),
        ("RATE_LIMIT_ENABLED", "false".into()),
        ("ADMIN_TOKEN", "faults".into()),
        ("CLAIM_IDLE_MS", "3000".into()),
        ("BATCH_LINGER_MS", "10".into()),
        ("INDEX_LINGER_MS", "10".into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(config.role_env.iter().cloned());
    env
}

/// Saves each worker's metrics in the work dir, and reads the dead jobs
/// per queue from the first that answers.
async fn save_metrics(http: &reqwest::Client, roles: &Roles, dir: &Path) -> BTreeMap<String, u64> {
    let mut dead = BTreeMap::new();
    for (i, worker) in roles.workers.iter().enumerate() {
        let url = format!(
            "http://127.0.0.1:{}/metrics",
            worker.port.unwrap_or_default()
        );
        let Ok(r) = http.get(url).send().await else {
            continue;
        };
        let Ok(text) = r.text().await else { continue };
        let _ = std::fs::write(dir.join(format!("worker-{}.metrics", i + 1)), &text);
        if dead.is_empty() {
            for queue in ["chats", "messages", "index"] {
                if let Some((_, n)) = queue_jobs(&text, queue).find(|(s, _)| s == "dead") {
                    dead.insert(queue.to_owned(), n);
                }
            }
        }
    }
    dead
}

fn report_restart_errors(supervision: &Supervision) {
    for e in &supervision.restart_errors {
        eprintln!("chat-faults: restart failed: {e}");
    }
}

/// The report's figures from what was recorded.
fn build(
    book: &Book,
    windows: &[Window],
    probes: &[(usize, Probe)],
    tally: &Tally,
    grace: f64,
) -> Report {
    let (per_window, outside) = crate::report::attribute(windows, &book.failures, grace);
    let faults = windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let ended = w.ended.unwrap_or(w.started);
            let probe = probes
                .iter()
                .find(|(p, _)| *p == i)
                .map(|(_, p)| *p)
                .unwrap_or_default();
            FaultRow {
                name: w.name.clone(),
                started_at: w.started,
                ended_at: ended,
                accepted_during: book
                    .told
                    .iter()
                    .filter(|t| w.started <= t.at && t.at <= ended)
                    .count(),
                retries: per_window[i],
                resumed_after: probe.resumed_after,
                searchable_after: probe.searchable_after,
                note: w.note.clone(),
                background: w.tag == Tag::Background,
            }
        })
        .collect();
    let mut retries_by_class = BTreeMap::new();
    let mut retries_by_api = vec![0; 2];
    for f in &book.failures {
        *retries_by_class.entry(f.class.clone()).or_default() += 1;
        if retries_by_api.len() <= f.api {
            retries_by_api.resize(f.api + 1, 0);
        }
        retries_by_api[f.api] += 1;
    }
    Report {
        faults,
        intended: book.intended,
        accepted: book.told.len(),
        first_try: book.first_try,
        retried_ok: book.retried_ok,
        client_4xx: book.rejected.len(),
        client_4xx_samples: book
            .rejected
            .iter()
            .take(3)
            .map(|(s, b)| format!("{s} {b}"))
            .collect(),
        unresolved: book.unresolved.len(),
        retries: book.failures.len(),
        retries_by_class,
        retries_by_api,
        retries_unattributed: outside,
        listed: tally.listed,
        persisted: tally.persisted,
        duplicated: tally.duplicated,
        lost: tally.lost,
        gaps: tally.gaps,
        unexpected: tally.unexpected,
        wrong_body: tally.wrong_body,
        unresolved_listed: tally.unresolved_listed,
        ..Report::default()
    }
}

/// A spawned task aborted when dropped, so an early return or a panic in
/// `run` does not leave the load or the faults running, and the processes
/// the task owns are dropped (killed) with it.
struct Guarded<T>(Option<JoinHandle<T>>);

impl<T: Send + 'static> Guarded<T> {
    fn spawn(task: impl Future<Output = T> + Send + 'static) -> Guarded<T> {
        Guarded(Some(tokio::spawn(task)))
    }

    fn is_finished(&self) -> bool {
        self.0.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Returns once the task has ended (without taking its result).
    async fn finished(&self) {
        while self.0.as_ref().is_some_and(|h| !h.is_finished()) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn join(mut self) -> Result<T> {
        let handle = self.0.as_mut().context("task already joined")?;
        let out = handle.await;
        self.0 = None;
        Ok(out?)
    }
}

impl<T> Drop for Guarded<T> {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}
