//! Row states as they travel API → queue → bulk writer.
//!
//! Each carries the full state of its row and the `version` taken when the
//! API accepted it. Versions only grow per application, so whichever state
//! has the larger version is the newer one, wherever it is compared: in the
//! coalescer, in the upsert, or when a read merges the database with a
//! pending entry.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRow {
    pub application_id: i64,
    pub number: i64,
    pub name: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRow {
    pub application_id: i64,
    pub chat_number: i64,
    pub number: i64,
    pub body: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A chat as a reader sees it: the newest known state plus the count the
/// database holds (zero while the chat exists only as a pending write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatView {
    pub row: ChatRow,
    pub messages_count: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplicationView {
    pub id: i64,
    pub token: String,
    pub name: String,
    pub chats_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Picks the newer of a persisted chat and a pending write to it.
pub fn newest_chat(persisted: Option<ChatView>, pending: Option<ChatRow>) -> Option<ChatView> {
    match (persisted, pending) {
        (Some(p), Some(w)) if w.version > p.row.version => Some(ChatView {
            row: w,
            messages_count: p.messages_count,
        }),
        (Some(p), _) => Some(p),
        (None, Some(w)) => Some(ChatView {
            row: w,
            messages_count: 0,
        }),
        (None, None) => None,
    }
}

/// Picks the newer of a persisted message and a pending write to it.
pub fn newest_message(
    persisted: Option<MessageRow>,
    pending: Option<MessageRow>,
) -> Option<MessageRow> {
    match (persisted, pending) {
        (Some(p), Some(w)) => Some(if w.version > p.version { w } else { p }),
        (p, w) => p.or(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(version: i64, name: &str) -> ChatRow {
        let t = chat_links::now();
        ChatRow {
            application_id: 1,
            number: 1,
            name: Some(name.into()),
            version,
            created_at: t,
            updated_at: t,
        }
    }

    #[test]
    fn a_pending_write_wins_only_when_it_is_newer() {
        let db = ChatView {
            row: chat(5, "db"),
            messages_count: 3,
        };
        let newer = newest_chat(Some(db.clone()), Some(chat(6, "pending"))).unwrap();
        assert_eq!(newer.row.name.as_deref(), Some("pending"));
        assert_eq!(newer.messages_count, 3);
        let older = newest_chat(Some(db), Some(chat(4, "stale"))).unwrap();
        assert_eq!(older.row.name.as_deref(), Some("db"));
    }
}
