//! The SQLite queue wakes the claims waiting on a queue when a job of that
//! queue commits, and only those: an embedded intake commit enqueues index
//! jobs many times a second, and a claim woken for nothing costs an empty
//! statement on the one SQLite writer.
mod support;

use std::time::Duration;

use chat_queue::{JobQueue, QueueName, SqliteQueue};

/// Whether `pushed` has completed, without waiting for it.
async fn woken(pushed: impl Future<Output = ()>) -> bool {
    // A timeout polls its future before its timer, so a completed one wins.
    tokio::time::timeout(Duration::ZERO, pushed).await.is_ok()
}

async fn push(queue: &SqliteQueue, to: QueueName) {
    queue.enqueue(to, "[]".into()).await.expect("enqueue");
}

#[tokio::test]
async fn an_enqueue_wakes_the_claims_of_its_own_queue_only() {
    let (queue, dir) = support::sqlite_queue(Duration::from_secs(30)).await;
    let index = queue.pushed(QueueName::Index);
    let chats = queue.pushed(QueueName::Chats);
    let messages = queue.pushed(QueueName::Messages);
    push(&queue, QueueName::Index).await;
    assert!(woken(index).await, "an index job wakes the index claims");
    assert!(!woken(chats).await, "an index job leaves the chats claims");
    assert!(
        !woken(messages).await,
        "an index job leaves the messages claims"
    );

    let chats = queue.pushed(QueueName::Chats);
    push(&queue, QueueName::Chats).await;
    assert!(woken(chats).await, "a chats job wakes the chats claims");
    std::fs::remove_dir_all(dir).ok();
}
