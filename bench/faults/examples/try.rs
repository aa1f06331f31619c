//! Runs the CI scenario once and prints its report.
//!
//! `CHAT_BIN` (default `target/debug/chat`), `OSMEM_SERVER` (required),
//! `FAULTS_KEEP=1` to keep the work dir.

use chat_faults::{Config, available, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Err(missing) = available() {
        anyhow::bail!("{missing}");
    }
    let chat = std::env::var("CHAT_BIN").unwrap_or_else(|_| "target/debug/chat".into());
    let osmem = std::env::var("OSMEM_SERVER").map_err(|_| anyhow::anyhow!("set OSMEM_SERVER"))?;
    let mut config = Config::ci(chat, osmem);
    config.keep_dir = std::env::var("FAULTS_KEEP").is_ok_and(|v| v == "1");
    let report = run(config).await?;
    println!("{report}");
    Ok(())
}
