//! Count recount benchmark: what an incremental run costs next to a full
//! recount, over `chats` chats holding `messages` messages in all.
//!
//! The data goes in through the real bulk writers (`upsert_all`), so the
//! count marks are the ones the workers would leave.
use std::time::{Duration, Instant};

use chat_store::{
    model::{ChatRow, MessageRow},
    repo::{applications, chats, counts, messages},
};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::system::Deployment;

const ROWS_PER_WRITE: usize = 2_000;

pub struct Report {
    pub profile: &'static str,
    pub seed: Duration,
    /// Name, duration, what the run did.
    pub runs: Vec<(&'static str, Duration, counts::RecountReport)>,
}

async fn timed<F: Future<Output = chat_links::error::Result<counts::RecountReport>>>(
    f: F,
) -> anyhow::Result<(Duration, counts::RecountReport)> {
    let started = Instant::now();
    let report = f.await?;
    Ok((started.elapsed(), report))
}

pub async fn run(
    deployment: &Deployment,
    chats_n: usize,
    messages_n: usize,
) -> anyhow::Result<Report> {
    let db = deployment.connect().await?;
    chat_links::db::migrate(&db).await?;
    let seed = seed(&db, chats_n, messages_n).await?;
    let stored = messages::total(&db).await?;
    let expected = (messages_n / chats_n * chats_n) as u64;
    anyhow::ensure!(
        stored == expected,
        "seeded {stored} messages, not {expected}"
    );
    let app = 1;
    let mut runs = Vec::new();

    let (took, r) = timed(counts::recount_dirty(&db, 10_000)).await?;
    runs.push(("incremental, every chat dirty (after seeding)", took, r));
    let (took, r) = timed(counts::recount_all(&db, 1_000)).await?;
    runs.push(("full, nothing drifted", took, r));

    counts::mark_chats(&db, [(app, (chats_n as i64 + 1) / 2)]).await?;
    let (took, r) = timed(counts::recount_dirty(&db, 10_000)).await?;
    anyhow::ensure!(
        r.chats_checked == 1 && r.applications_checked == 0,
        "one marked chat, but the run checked {r:?}"
    );
    runs.push(("incremental, 1 dirty chat", took, r));

    counts::mark_chats(&db, (1..=100).map(|c| (app, c))).await?;
    let (took, r) = timed(counts::recount_dirty(&db, 10_000)).await?;
    runs.push(("incremental, 100 dirty chats", took, r));

    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        "UPDATE chats SET messages_count = 0",
    ))
    .await?;
    let (took, r) = timed(counts::recount_all(&db, 1_000)).await?;
    runs.push(("full, every count wrong", took, r));

    Ok(Report {
        profile: deployment.profile,
        seed,
        runs,
    })
}

async fn seed(
    db: &DatabaseConnection,
    chats_n: usize,
    messages_n: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let app = application_with_chats(db, "bench", chats_n).await?;
    let now = chat_links::now();
    // Chat by chat, as a steady load would fill them.
    let per_chat = messages_n / chats_n.max(1);
    let mut batch = Vec::with_capacity(ROWS_PER_WRITE);
    for chat in 1..=chats_n as i64 {
        for number in 1..=per_chat as i64 {
            batch.push(MessageRow {
                application_id: app,
                chat_number: chat,
                number,
                body: format!("message {number} of chat {chat}"),
                version: 1,
                created_at: now,
                updated_at: now,
            });
            if batch.len() == ROWS_PER_WRITE {
                messages::upsert_all(db, &batch).await?;
                batch.clear();
            }
        }
    }
    messages::upsert_all(db, &batch).await?;
    Ok(started.elapsed())
}

/// A new application with chats 1..=`chats_n`, written by the real bulk
/// writer; returns its id.
pub async fn application_with_chats(
    db: &DatabaseConnection,
    name: &str,
    chats_n: usize,
) -> anyhow::Result<i64> {
    let app = applications::create(db, name).await?.id;
    let now = chat_links::now();
    let rows: Vec<ChatRow> = (1..=chats_n as i64)
        .map(|number| ChatRow {
            application_id: app,
            number,
            name: None,
            version: 1,
            created_at: now,
            updated_at: now,
        })
        .collect();
    for chunk in rows.chunks(ROWS_PER_WRITE) {
        chats::upsert_all(db, chunk).await?;
    }
    Ok(app)
}

pub fn print(r: &Report, chats_n: usize, messages_n: usize) {
    println!(
        "\n[{}] counts over {chats_n} chats, {messages_n} messages (seeded in {:.1?})",
        r.profile, r.seed
    );
    println!(
        "  {:<48} {:>10} {:>9} {:>9} {:>7}",
        "run", "duration", "checked", "repaired", "marks"
    );
    for (name, took, report) in &r.runs {
        println!(
            "  {name:<48} {:>10} {:>9} {:>9} {:>7}",
            format!("{:.1?}", took),
            report.chats_checked + report.applications_checked,
            report.repaired(),
            report.marks
        );
    }
}
