//! Starting roles, and stopping them together on SIGTERM or Ctrl-C.

use std::time::Duration;

use chat::backends::{Backends, BackendsConfig, Profile};
use chat_api::{ApiConfig, AppState, overload::OverloadLimits, rate_limit::RateLimits};
use chat_dashboard::{DashboardConfig, scheduler::Schedule};
use tokio::{net::TcpListener, sync::watch};

use crate::config::{Cli, Command, Settings};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    let settings = cli.settings;
    if matches!(command, Command::Serve | Command::Api)
        && let Some(refusal) = settings
            .admin_token
            .as_deref()
            .and_then(crate::admin::refusal)
    {
        anyhow::bail!(refusal);
    }
    let backends = open_backends(&settings.backends(&command)?).await?;
    tracing::info!(profile = ?backends.profile, role = ?command, "backends ready");
    if !backends.search.configured() && matches!(command, Command::Api | Command::Worker) {
        // On SQLite the intake queues new messages' index jobs itself: they
        // wait for a `chat serve` on the same file.
        let waiting = match backends.profile {
            Profile::Embedded => "new messages' index jobs wait for `chat serve`",
            Profile::Distributed => "messages are not indexed",
        };
        tracing::warn!(
            "search is not configured: ELASTICSEARCH_URL is unset, and only `chat serve` keeps \
             an embedded index (no other process could share it); searches answer 503 and \
             {waiting}"
        );
    }
    match command {
        Command::Migrate => {
            tracing::info!("migrations applied");
            return Ok(());
        }
        Command::Reindex(args) => return crate::reindex::run(&backends, args).await,
        Command::Recount => return recount(&backends).await,
        _ => {}
    }

    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });

    let mut roles = tokio::task::JoinSet::new();
    if matches!(command, Command::Serve | Command::Api) {
        let listener = TcpListener::bind((settings.bind_addr, settings.port)).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "listening");
        let dashboard = dashboard_config(&settings, addr);
        let http = serve_http(
            listener,
            backends.clone(),
            settings.clone(),
            dashboard,
            shutdown.clone(),
        );
        roles.spawn(async move { ("api", http.await) });
    }
    if !matches!(command, Command::Serve | Command::Api)
        && let Some(port) = settings.metrics_port
    {
        let listener = TcpListener::bind((settings.bind_addr, port)).await?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
        let app = chat_api::metrics::standalone_router(backends.observed());
        let mut stop = shutdown.clone();
        roles.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .await;
            ("metrics", served.map_err(Into::into))
        });
    }
    if matches!(command, Command::Serve | Command::Worker) {
        let (b, c, s) = (backends.worker(), settings.worker(), shutdown.clone());
        roles.spawn(async move {
            chat_jobs::run_pool(&b, c, s).await;
            ("worker", Ok(()))
        });
    }
    if matches!(command, Command::Serve | Command::Scheduler) {
        let (b, c, s) = (backends.scheduler(), settings.scheduler(), shutdown.clone());
        roles.spawn(async move {
            chat_scheduler::run(b, c, s).await;
            ("scheduler", Ok(()))
        });
    }
    // The runtime's wind-down comes after the roles; both fit in the
    // deadline an orchestrator was promised.
    let deadline = Duration::from_secs(settings.shutdown_timeout_secs)
        .saturating_sub(crate::RUNTIME_WIND_DOWN);
    let mut stopping = shutdown.clone();
    let past_deadline = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
        tokio::time::sleep(deadline).await;
    };
    tokio::pin!(past_deadline);
    loop {
        tokio::select! {
            done = roles.join_next() => {
                let Some(done) = done else { return Ok(()) };
                let (role, result) = done?;
                match &result {
                    Ok(()) => tracing::info!(role, "role stopped"),
                    Err(e) => tracing::error!(role, error = %e, "role failed"),
                }
                result?;
            }
            _ = &mut past_deadline => {
                // What is still running was never acked: its jobs' leases
                // lapse and another worker takes them over.
                tracing::warn!(
                    roles = roles.len(),
                    ?deadline,
                    "shutdown deadline passed; leaving unfinished work to other workers"
                );
                roles.abort_all();
                return Ok(());
            }
        }
    }
}

/// Opens the backends, waiting (with a capped, doubling pause) while one
/// is out of reach: a role started during an outage, or restarted by an
/// orchestrator in one, comes up when the backend does instead of exiting.
/// Anything else (a refused configuration, bad credentials) ends the role.
async fn open_backends(config: &BackendsConfig) -> anyhow::Result<Backends> {
    let mut pause = Duration::from_millis(250);
    loop {
        match Backends::open(config).await {
            Ok(backends) => return Ok(backends),
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, ?pause, "a backend is out of reach; waiting for it");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `chat recount`: the full recount on demand.
async fn recount(backends: &Backends) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let report = chat_store::repo::counts::recount_all(&backends.writer, 1_000).await?;
    println!(
        "recounted {} chats ({} repaired) and {} applications ({} repaired) in {:.2?}",
        report.chats_checked,
        report.chats_repaired,
        report.applications_checked,
        report.applications_repaired,
        started.elapsed()
    );
    Ok(())
}

/// The dashboard's settings; with no `ADMIN_TOKEN`, a fresh random one,
/// whose login link goes to standard output as Jupyter prints its own.
fn dashboard_config(settings: &Settings, addr: std::net::SocketAddr) -> DashboardConfig {
    let token = match settings.admin_token.as_deref().map(str::trim) {
        Some(token) if !token.is_empty() => token.to_owned(),
        _ => {
            let token = chat_dashboard::auth::generate_token();
            println!("dashboard: {}", crate::admin::login_link(addr, &token));
            token
        }
    };
    let scheduler = settings.scheduler();
    let schedules = chat_scheduler::Task::ALL
        .into_iter()
        .map(|task| Schedule {
            task,
            every_secs: scheduler.every(task).map(|d| d.as_secs()),
        })
        .collect();
    DashboardConfig {
        token,
        schedules,
        read_only: settings.dashboard_read_only,
        jaeger_ui_url: settings
            .jaeger_ui_url
            .clone()
            .filter(|u| !u.trim().is_empty()),
        login_failures: settings.admin_login_failures,
        trust_forwarded_for: settings.trust_forwarded_for,
        trust_forwarded_proto: settings.trust_forwarded_proto,
    }
}

async fn serve_http(
    listener: TcpListener,
    backends: Backends,
    settings: Settings,
    dashboard: DashboardConfig,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let state = AppState::new(
        backends.api(),
        ApiConfig {
            max_message_bytes: settings.max_message_bytes,
            rate_limits: RateLimits {
                enabled: settings.rate_limit_enabled,
                window: Duration::from_secs(settings.rate_limit_window_secs.max(1)),
                token_writes: settings.rate_limit_token_writes,
                token_reads: settings.rate_limit_token_reads,
                ip_writes: settings.rate_limit_ip_writes,
                ip_reads: settings.rate_limit_ip_reads,
                trust_forwarded_for: settings.trust_forwarded_for,
            },
            overload: OverloadLimits {
                max_concurrent: settings.max_concurrent_requests.max(1),
                timeout: Duration::from_millis(settings.request_timeout_ms.max(1)),
            },
            cors_origins: settings.cors_allowed_origins.clone(),
        },
    );
    let body_within = Duration::from_millis(settings.request_timeout_ms.max(1));
    let app = chat_api::router(state)
        .merge(chat_dashboard::router(backends.dashboard(), dashboard))
        .merge(chat_api::metrics::router(backends.observed()))
        .layer(axum::middleware::from_fn(move |request, next| {
            chat_api::body_deadline::limit(body_within, request, next)
        }))
        .layer(axum::middleware::from_fn(chat_api::request_id::request_id));
    crate::http::serve(
        listener,
        app,
        crate::http::Limits {
            header_read_timeout: Duration::from_millis(settings.header_read_timeout_ms.max(1)),
            max_connections: settings.max_connections.max(1),
        },
        shutdown,
    )
    .await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
