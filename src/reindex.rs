//! `chat reindex`: rebuild the search index from the database with a
//! progress bar, or (`--check`) compare and repair per-chat counts.
use chat::backends::Backends;
use chat_search::maintenance::{self, Progress};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::ReindexArgs;

pub async fn run(backends: &Backends, args: ReindexArgs) -> anyhow::Result<()> {
    let search = backends.search.as_ref();
    if args.check {
        // An operator asks now: every persisted message counts, however
        // recent (re-sending one still in flight is harmless).
        let report = maintenance::check_drift(
            &backends.db,
            search,
            !args.dry_run,
            std::time::Duration::ZERO,
        )
        .await?;
        for d in &report.drifted {
            println!(
                "chat {}:{} has {} messages in the database and {} in the index \
                 ({} missing, {} extra)",
                d.chat.application_id,
                d.chat.chat_number,
                d.in_database,
                d.in_index,
                d.missing,
                d.extra
            );
        }
        println!(
            "checked {} chats: {} drifted, {} repaired ({} messages re-sent, {} documents removed)",
            report.chats_checked,
            report.drifted.len(),
            report.repaired,
            report.resent,
            report.removed
        );
        return Ok(());
    }
    let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} messages  {per_sec}  ETA {eta}",
    )?);
    let report = maintenance::rebuild(&backends.db, search, args.restart, |p: Progress| {
        bar.set_length(p.total);
        bar.set_position(p.indexed);
    })
    .await?;
    bar.finish();
    println!(
        "{} {} messages into generation {} of the {} index; it is live",
        if report.resumed {
            "resumed and indexed"
        } else {
            "indexed"
        },
        report.indexed,
        report.generation,
        search.kind(),
    );
    Ok(())
}
