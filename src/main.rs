//! `chat`: reads the configuration and runs one role, or all of them.
//!
//! This is the only crate that knows every other one; it wires them and
//! owns process concerns (signals, listeners, exit codes), nothing else.
use clap::Parser;

mod config;
mod roles;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = config::Cli::parse();
    chat_observability::init("info,sqlx=warn,sea_orm=warn");
    roles::run(cli).await
}
