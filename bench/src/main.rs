//! Write-path benchmark: starts the system from the release `chat` binary
//! on fresh data, drives it over HTTP, and compares it with this machine's
//! limits measured in the same run. Prints numbers; asserts nothing.
//!
//! `cargo run --release -p bench -- --profile embedded|distributed`
//! `cargo run --release -p bench -- [--profile …] search|counts|marks|overview`
//! `cargo run --release -p bench -- [--redis-cluster] scale [--processes 2]`
//! `cargo run --release -p bench -- tracing [--turns 10]`
//! `cargo run --release -p bench -- faults [--messages N]`
use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

mod bare;
mod client;
mod counts;
mod indexing;
mod lag;
mod limits;
mod load;
mod marks;
mod overview;
mod report;
mod run;
mod scale;
mod search;
mod stats;
mod system;
mod tracing_cost;

#[derive(Parser)]
#[command(about = "Measures the chat write path against this machine's limits")]
struct Cli {
    #[command(subcommand)]
    internal: Option<Internal>,
    /// Which deployment to measure; both when not given.
    #[arg(long, value_enum)]
    profile: Option<Profile>,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Messages queued with no worker running, then drained.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Of those, how many go to one hot chat.
    #[arg(long, default_value_t = 20_000)]
    hot: usize,
    /// Chats in the application the load is spread over.
    #[arg(long, default_value_t = 200)]
    chats: usize,
    /// Requests in each of the other runs (limit, POST with worker, GET).
    #[arg(long, default_value_t = 50_000)]
    requests: usize,
    /// Longest any of those runs may take, in seconds.
    #[arg(long, default_value_t = 20)]
    max_run_secs: u64,
    /// Writes in the embedded decay run (the last tenth's rate over the
    /// first's); 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    decay_writes: usize,
    /// Documents in the distributed indexing run, which needs
    /// `ELASTICSEARCH_URL` or `OSMEM_SERVER`; 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    index_docs: usize,
    /// How long the lag run sends at half the sustained rate, in seconds.
    #[arg(long, default_value_t = 10)]
    lag_secs: u64,
    #[arg(
        long,
        env = "TEST_MYSQL_URL",
        default_value = "mysql://root@127.0.0.1:3306"
    )]
    mysql_url: String,
    #[arg(long, env = "TEST_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Run the distributed profile on a private Redis Cluster (three
    /// masters, each with a replica) that the bench starts, instead of on
    /// `--redis-url`: its results are named `profile=cluster`.
    #[arg(long)]
    redis_cluster: bool,
    /// Keep the roles' logs (see BENCH_ROLE_LOG) and data dir after the run.
    #[arg(long)]
    keep_logs: bool,
    /// The `chat` binary; by default built with `cargo build --release`.
    #[arg(long)]
    chat_bin: Option<PathBuf>,
    /// Must match the worker's: the roles read the same variables.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 512)]
    batch_size: usize,
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 20)]
    batch_linger_ms: u64,
    /// Must match the worker's, as `--batch-size`: the raw bulk adds of the
    /// indexing limit are this size.
    #[arg(long, env = "INDEX_BATCH_SIZE", default_value_t = 5_000)]
    index_batch_size: usize,
}

#[derive(Subcommand)]
enum Internal {
    /// Search instead of the write path: bulk indexing and query latency
    /// over one big chat, then the 201-to-searchable lag per profile.
    Search {
        /// Messages in the one chat searched.
        #[arg(long, default_value_t = 100_000)]
        docs: usize,
        /// Queries per latency run.
        #[arg(long, default_value_t = 2_000)]
        queries: usize,
        /// Concurrent searchers in the second latency run.
        #[arg(long, default_value_t = 8)]
        searchers: usize,
        /// Messages probed for the searchable lag, and their rate per second.
        #[arg(long, default_value_t = 500)]
        probes: usize,
        #[arg(long, default_value_t = 50.0)]
        probe_rate: f64,
        /// Other writes per second during the lag run.
        #[arg(long, default_value_t = 500.0)]
        background_rate: f64,
        /// Also measure this Elasticsearch (or OpenSearch-compatible) server.
        #[arg(long, env = "ELASTICSEARCH_URL")]
        elasticsearch_url: Option<String>,
    },
    /// Count recounts instead of the write path: an incremental run over
    /// one dirty chat next to a full recount, on seeded data.
    Counts {
        #[arg(long, default_value_t = 10_000)]
        chats: usize,
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
    },
    /// The count marks under a sustained write rate: the table's size over
    /// time while the `counts` task runs on its interval.
    Marks {
        /// Rows persisted per second.
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        #[arg(long, default_value_t = 600)]
        secs: u64,
        #[arg(long, default_value_t = 10_000)]
        chats: usize,
        /// Seconds between runs of the counts task (its default).
        #[arg(long, default_value_t = 60)]
        interval: u64,
    },
    /// Several API processes and as many workers at once on the
    /// distributed profile (`--redis-cluster` for a cluster), writing to
    /// several applications: the CPU per POST and per row, summed over the
    /// processes.
    Scale {
        #[arg(long, default_value_t = 2)]
        processes: usize,
        #[arg(long, default_value_t = 8)]
        apps: usize,
    },
    /// What tracing costs: `--requests` POSTs, taken in and persisted, on
    /// the distributed profile with tracing off, sampling 1% and sampling
    /// 100%, on three deployments side by side, sent to them in `--turns`
    /// turns whose first mode rotates; CPU per POST and per row.
    Tracing {
        #[arg(long, default_value_t = 10)]
        turns: usize,
    },
    /// The dashboard's overview render time over a queue holding this many
    /// finished jobs, all within the retention.
    Overview {
        #[arg(long, default_value_t = 1_000_000)]
        jobs: usize,
        #[arg(long, default_value_t = 50)]
        renders: usize,
    },
    /// The fault suite of `tests/faults.rs`, long: `--messages` writes from
    /// 64 clients while Redis, MariaDB, search and the workers fail in
    /// cycles; prints each fault's figures and whether every accepted write
    /// was persisted exactly once. Needs `OSMEM_SERVER`.
    Faults {
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        /// Keep the scenario's work dir (logs, data).
        #[arg(long)]
        keep: bool,
    },
    /// The bare handler the POST path is compared with (started by the bench).
    #[command(hide = true)]
    LimitServer {
        #[arg(long, value_enum)]
        kind: bare::Kind,
        #[arg(long)]
        url: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        port: u16,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Profile {
    Embedded,
    Distributed,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.internal {
        Some(Internal::LimitServer {
            kind,
            url,
            key,
            port,
        }) => {
            return bare::serve(*kind, url, key, *port).await;
        }
        Some(Internal::Search {
            docs,
            queries,
            searchers,
            probes,
            probe_rate,
            background_rate,
            elasticsearch_url,
        }) => {
            let options = search::Options {
                docs: *docs,
                batch: cli.batch_size.max(1),
                queries: *queries,
                concurrency: (*searchers).max(1),
                probes: *probes,
                probe_rate: probe_rate.max(1.0),
                background_rate: background_rate.max(1.0),
            };
            return run_search(&cli, &options, elasticsearch_url.clone()).await;
        }
        Some(Internal::Counts { chats, messages }) => {
            let chats = (*chats).max(1);
            let mut reports = Vec::new();
            for profile in cli.profiles() {
                let deployment = deploy(&cli, profile, std::path::Path::new("chat")).await?;
                let outcome = counts::run(&deployment, chats, *messages).await;
                deployment.tear_down(cli.keep_logs).await?;
                reports.push(outcome?);
            }
            for r in &reports {
                counts::print(r, chats, *messages);
            }
            return Ok(());
        }
        Some(Internal::Marks {
            rate,
            secs,
            chats,
            interval,
        }) => {
            let options = marks::Options {
                rate: (*rate).max(1),
                duration: Duration::from_secs(*secs),
                chats: (*chats).max(2),
                batch: cli.batch_size.max(1),
                interval: Duration::from_secs((*interval).max(1)),
            };
            for profile in cli.profiles() {
                let deployment = deploy(&cli, profile, std::path::Path::new("chat")).await?;
                let outcome = marks::run(&deployment, &options).await;
                deployment.tear_down(cli.keep_logs).await?;
                outcome?;
            }
            return Ok(());
        }
        Some(Internal::Faults { messages, keep }) => {
            chat_faults::available().map_err(anyhow::Error::msg)?;
            let osmem = std::env::var("OSMEM_SERVER")
                .map_err(|_| anyhow::anyhow!("set OSMEM_SERVER (see README, Testing)"))?;
            let chat = system::chat_binary(cli.chat_bin.clone())?;
            let mut config = chat_faults::Config::long(chat, osmem, *messages);
            config.keep_dir = *keep;
            let report = chat_faults::run(config).await?;
            println!("{report}");
            anyhow::ensure!(
                report.failures().is_empty(),
                "{} properties violated",
                report.failures().len()
            );
            return Ok(());
        }
        Some(Internal::Scale { processes, apps }) => {
            let chat = system::chat_binary(cli.chat_bin.clone())?;
            let options = scale::Options {
                processes: (*processes).max(1),
                apps: (*apps).max(1),
                chats: cli.chats.max(1),
                requests: cli.requests,
                concurrency: cli.concurrency.max(1),
            };
            let deployment = deploy(&cli, Profile::Distributed, &chat).await?;
            let outcome = scale::run(&deployment, &options).await;
            deployment
                .tear_down(cli.keep_logs || outcome.is_err())
                .await?;
            scale::print(&outcome?);
            return Ok(());
        }
        Some(Internal::Tracing { turns }) => {
            let chat = system::chat_binary(cli.chat_bin.clone())?;
            // Every deployment made is torn down below, also when a later
            // one fails to deploy.
            let mut deployments = Vec::new();
            let mut deployed = Ok(());
            for _ in tracing_cost::Mode::ALL {
                match deploy(&cli, Profile::Distributed, &chat).await {
                    Ok(d) => deployments.push(d),
                    Err(e) => {
                        deployed = Err(e);
                        break;
                    }
                }
            }
            let outcome = match deployed {
                Ok(()) => {
                    tracing_cost::measure(
                        &deployments,
                        cli.requests,
                        *turns,
                        cli.chats.max(1),
                        cli.concurrency.max(1),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            for deployment in deployments {
                deployment
                    .tear_down(cli.keep_logs || outcome.is_err())
                    .await?;
            }
            tracing_cost::print(&outcome?);
            return Ok(());
        }
        Some(Internal::Overview { jobs, renders }) => {
            let chat = system::chat_binary(cli.chat_bin.clone())?;
            let mut reports = Vec::new();
            for profile in cli.profiles() {
                let deployment = deploy(&cli, profile, &chat).await?;
                let outcome = overview::run(&deployment, *jobs, (*renders).max(1)).await;
                deployment.tear_down(cli.keep_logs).await?;
                reports.push(outcome?);
            }
            for r in &reports {
                overview::print(r);
            }
            return Ok(());
        }
        None => {}
    }
    anyhow::ensure!(
        cli.chats >= 2,
        "--chats must be at least 2: one hot, the rest spread"
    );
    anyhow::ensure!(cli.hot < cli.messages, "--hot must be less than --messages");
    let chat = system::chat_binary(cli.chat_bin.clone())?;
    let options = run::Options {
        concurrency: cli.concurrency.max(1),
        messages: cli.messages,
        hot: cli.hot,
        chats: cli.chats,
        requests: cli.requests,
        max_run: Duration::from_secs(cli.max_run_secs),
        lag_run: Duration::from_secs(cli.lag_secs),
        batch_size: cli.batch_size.max(1),
        linger: Duration::from_millis(cli.batch_linger_ms),
        index_batch_size: cli.index_batch_size.max(1),
        decay_writes: cli.decay_writes,
        index_docs: cli.index_docs,
    };
    let mut results = Vec::new();
    for profile in cli.profiles() {
        let deployment = deploy(&cli, profile, &chat).await?;
        let outcome = run::run(&deployment, &options).await;
        let name = deployment.profile;
        if let Err(e) = &outcome {
            eprintln!("[{name}] failed: {e:#}");
        }
        // A failed run keeps its logs to be read.
        deployment
            .tear_down(cli.keep_logs || outcome.is_err())
            .await?;
        results.push((name, outcome?));
    }
    for (name, report) in &results {
        report::print(name, options.concurrency, options.messages, report);
    }
    Ok(())
}

async fn run_search(
    cli: &Cli,
    options: &search::Options,
    elasticsearch_url: Option<String>,
) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("chat-bench-{:08x}", rand::random::<u32>()));
    let mut configs = vec![chat_search::SearchConfig::Embedded {
        dir: work.join("tantivy"),
    }];
    if let Some(url) = elasticsearch_url {
        configs.push(chat_search::SearchConfig::Elasticsearch {
            url,
            alias: format!("chat-bench-{:08x}", rand::random::<u32>()),
            shards: 1,
        });
    }
    let mut reports = Vec::new();
    for config in &configs {
        reports.push(search::backend(config, options).await?);
    }
    std::fs::remove_dir_all(&work).ok();
    let chat = system::chat_binary(cli.chat_bin.clone())?;
    let mut lags = Vec::new();
    for profile in cli.profiles() {
        let deployment = deploy(cli, profile, &chat).await?;
        let outcome = search::searchable_lag(&deployment, options).await;
        let name = deployment.profile;
        deployment
            .tear_down(cli.keep_logs || outcome.is_err())
            .await?;
        lags.push((name, outcome?));
    }
    for r in &reports {
        search::print_backend(r, options);
    }
    for (name, (lag, round)) in &lags {
        search::print_lag(name, lag, *round, options);
    }
    Ok(())
}

impl Cli {
    fn profiles(&self) -> Vec<Profile> {
        match self.profile {
            Some(p) => vec![p],
            None => vec![Profile::Embedded, Profile::Distributed],
        }
    }
}

/// A fresh deployment of `profile` in a work dir of its own.
async fn deploy(
    cli: &Cli,
    profile: Profile,
    chat: &std::path::Path,
) -> anyhow::Result<system::Deployment> {
    let work = std::env::temp_dir().join(format!("chat-bench-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&work)?;
    Ok(match profile {
        Profile::Embedded => system::Deployment::embedded(chat.to_owned(), work)?,
        Profile::Distributed if cli.redis_cluster => {
            let cluster = tokio::task::spawn_blocking(chat_faults::cluster::Cluster::start).await?;
            let mut d = system::Deployment::distributed(
                chat.to_owned(),
                work,
                &cli.mysql_url,
                &cluster.url(),
            )
            .await?;
            d.profile = "cluster";
            d.cluster = Some(cluster);
            d
        }
        Profile::Distributed => {
            system::Deployment::distributed(chat.to_owned(), work, &cli.mysql_url, &cli.redis_url)
                .await?
        }
    })
}
