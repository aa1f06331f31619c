//! `chat`: reads the configuration and runs one role, or all of them.
//!
//! This is the only crate that knows every other one; it wires them and
//! owns process concerns (signals, listeners, exit codes), nothing else.
use clap::Parser;

mod admin;
mod allocator;
mod config;
mod http;
mod reindex;
mod roles;

/// How long the runtime may take to wind down once every role has stopped
/// (or been abandoned at `SHUTDOWN_TIMEOUT_SECS`): a blocking task still
/// running (a search index commit, say) must not hold the exit.
pub(crate) const RUNTIME_WIND_DOWN: std::time::Duration = std::time::Duration::from_secs(3);

fn main() -> anyhow::Result<()> {
    allocator::purge_freed_memory_promptly();
    let cli = config::Cli::parse();
    // Huge pages cost the other roles memory, and the API CPU without them.
    if cli.command != Some(config::Command::Api) {
        allocator::refuse_transparent_huge_pages();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        let telemetry =
            chat_observability::init("info,sqlx=warn,sea_orm=warn", cli.settings.log_format());
        let outcome = roles::run(cli).await;
        // The batch processor's flush blocks; keep it off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        outcome
    });
    // Dropping a runtime waits for its blocking tasks without end.
    runtime.shutdown_timeout(RUNTIME_WIND_DOWN);
    outcome
}
