//! Helpers the store's queue tests share.
#![allow(dead_code)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use chat_store::{db, queue::SqliteQueue};

/// A migrated SQLite queue in a fresh directory, which the caller removes.
pub async fn sqlite_queue(lease: Duration) -> (Arc<SqliteQueue>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("chat-q-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = db::default_sqlite_url(&dir);
    let reader = db::connect(&url).await.unwrap();
    let writer = db::connect_writer(&url).await.unwrap();
    db::migrate(&writer).await.unwrap();
    (SqliteQueue::new(reader, writer, lease), dir)
}

/// Deletes every key under `prefix` in `TEST_REDIS_URL`.
pub async fn drop_keys(prefix: &str) {
    let client = redis::Client::open(std::env::var("TEST_REDIS_URL").unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}
