use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::{Page, upsert};
use crate::{
    entity::chat,
    model::{ChatRow, ChatView},
};
use chat_links::error::Result;

fn view(m: chat::Model) -> ChatView {
    ChatView {
        row: ChatRow {
            application_id: m.application_id,
            number: m.number,
            name: m.name,
            version: m.version,
            created_at: m.created_at,
            updated_at: m.updated_at,
        },
        messages_count: m.messages_count,
    }
}

pub async fn find(db: &DatabaseConnection, app_id: i64, number: i64) -> Result<Option<ChatView>> {
    Ok(chat::Entity::find()
        .filter(chat::Column::ApplicationId.eq(app_id))
        .filter(chat::Column::Number.eq(number))
        .one(db)
        .await?
        .map(view))
}

pub async fn list(
    db: &DatabaseConnection,
    app_id: i64,
    after: i64,
    limit: u64,
) -> Result<Page<ChatView>> {
    let rows = chat::Entity::find()
        .filter(chat::Column::ApplicationId.eq(app_id))
        .filter(chat::Column::Number.gt(after))
        .order_by_asc(chat::Column::Number)
        .limit(limit + 1)
        .all(db)
        .await?;
    Ok(Page::from_overfetch(
        rows.into_iter().map(view).collect(),
        limit,
        |c| c.row.number,
    ))
}

/// The highest persisted chat number of an application, 0 if none.
pub async fn max_number(db: &impl ConnectionTrait, app_id: i64) -> Result<i64> {
    let max: Option<Option<i64>> = chat::Entity::find()
        .select_only()
        .column_as(chat::Column::Number.max(), "max")
        .filter(chat::Column::ApplicationId.eq(app_id))
        .into_tuple()
        .one(db)
        .await?;
    Ok(max.flatten().unwrap_or(0))
}

/// Writes every row in one statement; each row only moves forward.
/// Writes the rows (version-guarded), then marks their applications and
/// the chats themselves for the next count recount: a chat's messages may
/// have been persisted, and their marks consumed, before its own row
/// existed to take the count. See `messages::upsert_all` for why the marks
/// need no transaction.
pub async fn upsert_all(db: &impl ConnectionTrait, rows: &[ChatRow]) -> Result<()> {
    upsert::chats(db, rows).await?;
    super::counts::mark_chats_and_applications(
        db,
        rows.iter().map(|r| (r.application_id, r.number)),
    )
    .await
}
