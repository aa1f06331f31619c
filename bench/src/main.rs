//! Write-path benchmark: starts the system from the release `chat` binary
//! on fresh data, drives it over HTTP, and compares it with this machine's
//! limits measured in the same run. Prints numbers; asserts nothing.
//!
//! `cargo run --release -p bench -- --profile embedded|distributed`
use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

mod client;
mod lag;
mod limits;
mod load;
mod report;
mod run;
mod stats;
mod system;

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
    /// Keep the roles' logs (see BENCH_ROLE_LOG) and data dir after the run.
    #[arg(long)]
    keep_logs: bool,
    /// The `chat` binary; by default built with `cargo build --release`.
    #[arg(long)]
    chat_bin: Option<PathBuf>,
    /// Must match the worker's: the roles read the same variables.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 500)]
    batch_size: usize,
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 20)]
    batch_linger_ms: u64,
}

#[derive(Subcommand)]
enum Internal {
    /// The bare handler the POST path is compared with (started by the bench).
    #[command(hide = true)]
    LimitServer {
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
    if let Some(Internal::LimitServer { url, key, port }) = &cli.internal {
        return limits::serve(url, key, *port).await;
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
    };
    let profiles = match cli.profile {
        Some(p) => vec![p],
        None => vec![Profile::Embedded, Profile::Distributed],
    };
    let mut results = Vec::new();
    for profile in profiles {
        let work = std::env::temp_dir().join(format!("chat-bench-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&work)?;
        let deployment = match profile {
            Profile::Embedded => system::Deployment::embedded(chat.clone(), work)?,
            Profile::Distributed => {
                system::Deployment::distributed(chat.clone(), work, &cli.mysql_url, &cli.redis_url)
                    .await?
            }
        };
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
