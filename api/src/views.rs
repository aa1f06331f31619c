//! Response shapes. Rows become JSON only here, so no internal id can leak
//! through a handler that serializes a row by accident.
use chat_store::{
    model::{ApplicationView, ChatView, MessageRow},
    repo::Page,
};
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Serialize)]
pub struct ApplicationJson {
    pub token: String,
    pub name: String,
    pub chats_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ApplicationView> for ApplicationJson {
    fn from(a: ApplicationView) -> Self {
        Self {
            token: a.token,
            name: a.name,
            chats_count: a.chats_count,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

#[derive(Serialize)]
pub struct ChatJson {
    pub number: i64,
    pub name: Option<String>,
    pub messages_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ChatView> for ChatJson {
    fn from(c: ChatView) -> Self {
        Self {
            number: c.row.number,
            name: c.row.name,
            messages_count: c.messages_count,
            created_at: c.row.created_at,
            updated_at: c.row.updated_at,
        }
    }
}

#[derive(Serialize)]
pub struct MessageJson {
    pub number: i64,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<MessageRow> for MessageJson {
    fn from(m: MessageRow) -> Self {
        Self {
            number: m.number,
            body: m.body,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[derive(Serialize)]
pub struct ListJson<T> {
    pub items: Vec<T>,
    pub next_after: Option<i64>,
}

impl<R, T: From<R>> From<Page<R>> for ListJson<T> {
    fn from(p: Page<R>) -> Self {
        Self {
            items: p.items.into_iter().map(T::from).collect(),
            next_after: p.next_after,
        }
    }
}
