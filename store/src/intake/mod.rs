//! Accepting chat and message writes.
//!
//! An accepted write is three things: a number (for a create), a version,
//! and a durable job carrying the row's full new state. The intake also
//! keeps that state as a *pending* entry until it expires, so a read right
//! after the 201 or 200 sees it before any worker has persisted it.
//!
//! Numbering rule: numbers are handed out once and never reused. On both
//! profiles a number, its job and its pending entry are written atomically
//! (one Redis script, or one SQLite transaction), so a failing write never
//! skips a number and never leaves a readable row that will not be
//! persisted. A client can still lose the answer to a write that committed.
use async_trait::async_trait;

use crate::{
    idempotency::Link,
    model::{ChatRow, MessageRow},
    ratelimit::folded::Folded,
};
use chat_links::error::Result;

mod redis;
mod sqlite;

pub use self::redis::RedisIntake;
pub use self::sqlite::SqliteIntake;

/// What a write carries besides its row.
#[derive(Clone, Debug, Default)]
pub struct WriteMeta {
    /// The W3C `traceparent` of the span that sends the write's job
    /// (`None` when untraced); the job carries it opaquely, so the
    /// worker's spans continue the request's trace.
    pub trace: Option<String>,
    /// The `Idempotency-Key` run the write belongs to. The write records
    /// its accepted state there, atomically with itself; and when an
    /// earlier run under the key already made it, the intake returns that
    /// state and writes nothing.
    pub idempotency: Option<Link>,
    /// The request's rate limits, for an intake that
    /// [folds](Intake::folds_rate_limits) them into its accept; the
    /// verdict comes back in it. Other intakes leave it alone.
    pub limits: Option<Folded>,
}

/// Every write returns the row state it accepted: the one it wrote, or,
/// under an `Idempotency-Key` an earlier run already wrote with, that one.
#[async_trait]
pub trait Intake: Send + Sync + 'static {
    /// Reserves the next chat number and enqueues the new chat.
    async fn create_chat(
        &self,
        app_id: i64,
        name: Option<String>,
        meta: WriteMeta,
    ) -> Result<ChatRow>;

    /// Enqueues a new state for an existing chat.
    async fn update_chat(
        &self,
        current: &ChatRow,
        name: Option<String>,
        meta: WriteMeta,
    ) -> Result<ChatRow>;

    /// Reserves the next message number in a chat and enqueues the message.
    async fn create_message(
        &self,
        app_id: i64,
        chat_number: i64,
        body: String,
        meta: WriteMeta,
    ) -> Result<MessageRow>;

    /// Enqueues a new state for an existing message.
    async fn update_message(
        &self,
        current: &MessageRow,
        body: String,
        meta: WriteMeta,
    ) -> Result<MessageRow>;

    /// Forgets the pending entries of rows now persisted, unless a newer
    /// state of the row is pending: the database answers for them now, and
    /// entries kept until they expire would make memory grow with the
    /// write rate rather than with the backlog.
    async fn forget_chats(&self, persisted: &[ChatRow]) -> Result<()>;

    async fn forget_messages(&self, persisted: &[MessageRow]) -> Result<()>;

    /// The newest accepted state of a chat that may not be persisted yet.
    /// An intake that [folds](Intake::folds_rate_limits) rate limits checks
    /// and counts `limits` in the same round trip, leaving the verdict
    /// there, and refuses with
    /// [`StoreError::RateLimited`](chat_links::StoreError) instead of
    /// reading; other intakes leave them alone.
    async fn pending_chat(
        &self,
        app_id: i64,
        number: i64,
        limits: Option<&Folded>,
    ) -> Result<Option<ChatRow>>;

    /// The newest accepted state of a message, as [`Intake::pending_chat`].
    async fn pending_message(
        &self,
        app_id: i64,
        chat_number: i64,
        number: i64,
        limits: Option<&Folded>,
    ) -> Result<Option<MessageRow>>;

    async fn ping(&self) -> Result<()>;

    /// Whether the writes above check the limits in their
    /// [`WriteMeta::limits`] in their own round trip, refusing with
    /// [`StoreError::RateLimited`](chat_links::StoreError) and leaving the
    /// verdict there; and the pending reads theirs, alike.
    fn folds_rate_limits(&self) -> bool {
        false
    }

    /// Drops pending entries past their lifetime. Redis expires its own;
    /// the embedded table needs this called now and then.
    async fn purge_expired(&self) -> Result<u64> {
        Ok(0)
    }
}

/// The scope of a pending chat is this prefix followed by its number.
fn chat_scope_prefix(app_id: i64) -> String {
    format!("c:{app_id}:")
}

fn chat_scope(app_id: i64, number: i64) -> String {
    format!("{}{number}", chat_scope_prefix(app_id))
}

fn message_scope_prefix(app_id: i64, chat_number: i64) -> String {
    format!("m:{app_id}:{chat_number}:")
}

fn message_scope(app_id: i64, chat_number: i64, number: i64) -> String {
    format!("{}{number}", message_scope_prefix(app_id, chat_number))
}
