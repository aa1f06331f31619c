//! The SQLite intake's group commit, on a real SQLite file: when many new
//! messages share a transaction (and their numbers and versions are taken
//! in bulk), every chat's numbers stay exactly 1..N, a chat with no counter
//! continues after its highest persisted message, versions never repeat,
//! within a chat a later number has a later
//! version, and each job and pending entry carries the state the caller got back.
use std::{collections::HashMap, sync::Arc, time::Duration};

use chat_links::db;
use chat_queue::SqliteQueue;
use chat_store::{
    intake::{Intake, SqliteIntake, WriteMeta},
    model::MessageRow,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

async fn rows(db: &DatabaseConnection, sql: &str) -> Vec<String> {
    db.query_all_raw(Statement::from_string(DbBackend::Sqlite, sql))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.try_get_by_index(0).unwrap())
        .collect()
}

#[tokio::test]
async fn a_group_of_new_messages_keeps_numbers_exact_and_versions_unique() {
    let file = std::env::temp_dir().join(format!(
        "chat-sqlite-intake-{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let reader = db::connect(&url).await.unwrap();
    let writer = db::connect_writer(&url).await.unwrap();
    db::migrate(&writer).await.unwrap();
    let app = chat_store::repo::applications::create(&writer, "a")
        .await
        .unwrap();
    let app_id = app.id;
    // Chat 3 already has five persisted messages and no counter: its
    // numbers must continue at 6.
    for n in 1..=5 {
        writer
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "INSERT INTO messages (application_id, chat_number, number, body, version, created_at, updated_at) \
                 VALUES (?, 3, ?, 'old', ?, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
                [app_id.into(), n.into(), n.into()],
            ))
            .await
            .unwrap();
    }
    let queue = SqliteQueue::new(reader.clone(), writer.clone(), Duration::from_secs(30));
    let intake = Arc::new(SqliteIntake::new(
        reader.clone(),
        writer.clone(),
        queue,
        Duration::from_secs(60),
    ));

    // Three waves of 300 concurrent writes over three chats: each wave
    // queues up while a commit runs, so groups hold many chats at once.
    let mut accepted: Vec<MessageRow> = Vec::new();
    for wave in 0..3 {
        let writes: Vec<_> = (0..300)
            .map(|i| {
                let intake = intake.clone();
                let chat = 1 + (i % 3) as i64;
                tokio::spawn(async move {
                    intake
                        .create_message(app_id, chat, format!("w{wave}-{i}"), WriteMeta::default())
                        .await
                        .unwrap()
                })
            })
            .collect();
        for write in writes {
            accepted.push(write.await.unwrap());
        }
    }

    let mut per_chat: HashMap<i64, Vec<i64>> = HashMap::new();
    for row in &accepted {
        per_chat
            .entry(row.chat_number)
            .or_default()
            .push(row.number);
    }
    for (chat, first) in [(1, 1), (2, 1), (3, 6)] {
        let mut got = per_chat.remove(&chat).unwrap();
        got.sort_unstable();
        let want: Vec<i64> = (first..first + 300).collect();
        assert_eq!(got, want, "chat {chat}'s numbers");
    }
    let mut versions: Vec<i64> = accepted.iter().map(|r| r.version).collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(
        versions.len(),
        accepted.len(),
        "a version was handed out twice"
    );
    // As if taken one by one: within a chat, a later number has a later
    // version.
    let mut by_number = accepted.clone();
    by_number.sort_by_key(|r| (r.chat_number, r.number));
    for pair in by_number.windows(2) {
        if pair[0].chat_number == pair[1].chat_number {
            assert!(pair[0].version < pair[1].version, "{pair:?}");
        }
    }

    // What each caller got back is what its job and its pending entry hold.
    let jobs = rows(
        &reader,
        "SELECT payload FROM queue_jobs WHERE queue = 'messages'",
    )
    .await;
    let pending = rows(&reader, "SELECT state FROM pending_rows").await;
    assert_eq!(jobs.len(), accepted.len());
    let parse = |json: &String| serde_json::from_str::<MessageRow>(json).unwrap();
    let mut jobs: Vec<MessageRow> = jobs.iter().map(parse).collect();
    let mut pending: Vec<MessageRow> = pending.iter().map(parse).collect();
    let key = |r: &MessageRow| (r.chat_number, r.number);
    accepted.sort_by_key(key);
    jobs.sort_by_key(key);
    pending.sort_by_key(key);
    assert_eq!(jobs, accepted);
    assert_eq!(pending, accepted);
    std::fs::remove_file(&file).ok();
}
