//! Accepting chat and message writes.
//!
//! An accepted write is three things: a number (for a create), a version,
//! and a durable job carrying the row's full new state. The intake also
//! keeps that state as a *pending* entry until it expires, so a read right
//! after the 201 or 200 sees it before any worker has persisted it.
//!
//! Numbering rule: numbers are handed out once and never reused. A number
//! is skipped only when a request fails between its reservation and its
//! enqueue (for example Redis answering the first call and failing the
//! second); the embedded profile does both in one transaction and never
//! skips. On Redis the job is enqueued before its pending entry is written,
//! so a failure never leaves a readable row that will not be persisted; a
//! request that fails after its enqueue answers 5xx, yet its row lands.
use async_trait::async_trait;

use crate::{
    error::Result,
    model::{ChatRow, MessageRow},
};

mod redis;
mod sqlite;

pub use self::redis::RedisIntake;
pub use self::sqlite::SqliteIntake;

#[async_trait]
pub trait Intake: Send + Sync + 'static {
    /// Reserves the next chat number and enqueues the new chat.
    async fn create_chat(&self, app_id: i64, name: Option<String>) -> Result<ChatRow>;

    /// Enqueues a new state for an existing chat.
    async fn update_chat(&self, current: &ChatRow, name: Option<String>) -> Result<ChatRow>;

    /// Reserves the next message number in a chat and enqueues the message.
    async fn create_message(
        &self,
        app_id: i64,
        chat_number: i64,
        body: String,
    ) -> Result<MessageRow>;

    /// Enqueues a new state for an existing message.
    async fn update_message(&self, current: &MessageRow, body: String) -> Result<MessageRow>;

    /// The newest accepted state of a chat that may not be persisted yet.
    async fn pending_chat(&self, app_id: i64, number: i64) -> Result<Option<ChatRow>>;

    async fn pending_message(
        &self,
        app_id: i64,
        chat_number: i64,
        number: i64,
    ) -> Result<Option<MessageRow>>;

    async fn ping(&self) -> Result<()>;

    /// Drops pending entries past their lifetime. Redis expires its own;
    /// the embedded table needs this called now and then.
    async fn purge_expired(&self) -> Result<u64> {
        Ok(0)
    }
}

fn chat_scope(app_id: i64, number: i64) -> String {
    format!("c:{app_id}:{number}")
}

fn message_scope(app_id: i64, chat_number: i64, number: i64) -> String {
    format!("m:{app_id}:{chat_number}:{number}")
}
