//! The SQLite intake's group commit, on a real SQLite file: when many new
//! messages share a transaction (and their numbers and versions are taken
//! in bulk), every chat's numbers stay exactly 1..N, a chat with no counter
//! continues after its highest persisted message, versions never repeat,
//! within a chat a later number has a later version, each row is written
//! in the intake's transaction with the state the caller got back, and the
//! group's index job carries those states.
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

    // What each caller got back is the persisted row, and the group's
    // index jobs carry those same states, each message once; nothing waits
    // in the persistence queue or the pending entries.
    let persisted = rows(
        &reader,
        &format!(
            "SELECT json_object('application_id', application_id, 'chat_number', chat_number, \
             'number', number, 'body', body, 'version', version) FROM messages \
             WHERE application_id = {app_id} AND body != 'old'"
        ),
    )
    .await;
    let index_jobs = rows(
        &reader,
        "SELECT payload FROM queue_jobs_with_payload WHERE queue = 'index'",
    )
    .await;
    assert!(
        index_jobs.len() < accepted.len(),
        "one index job per group, not per message: {} jobs",
        index_jobs.len()
    );
    let key = |r: &MessageRow| (r.chat_number, r.number);
    let mut indexed: Vec<MessageRow> = index_jobs
        .iter()
        .flat_map(|json| serde_json::from_str::<Vec<MessageRow>>(json).unwrap())
        .collect();
    indexed.sort_by_key(key);
    accepted.sort_by_key(key);
    assert_eq!(indexed, accepted);
    let fields = |r: &MessageRow| (r.chat_number, r.number, r.body.clone(), r.version);
    let mut stored: Vec<_> = persisted
        .iter()
        .map(|json| {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            (
                v["chat_number"].as_i64().unwrap(),
                v["number"].as_i64().unwrap(),
                v["body"].as_str().unwrap().to_owned(),
                v["version"].as_i64().unwrap(),
            )
        })
        .collect();
    stored.sort();
    assert_eq!(stored, accepted.iter().map(fields).collect::<Vec<_>>());
    let queued = rows(
        &reader,
        "SELECT CAST(count(*) AS TEXT) FROM queue_jobs WHERE queue = 'messages'",
    )
    .await;
    assert_eq!(queued, ["0"], "no persistence job for a written row");
    let pending = rows(&reader, "SELECT CAST(count(*) AS TEXT) FROM pending_rows").await;
    assert_eq!(pending, ["0"], "no pending entry for a written row");
    // Every chat written to is marked for its recount.
    let marked = rows(
        &reader,
        &format!(
            "SELECT DISTINCT CAST(chat_number AS TEXT) FROM count_marks \
             WHERE application_id = {app_id} ORDER BY chat_number"
        ),
    )
    .await;
    assert_eq!(marked, ["1", "2", "3"]);
    std::fs::remove_file(&file).ok();
}
