use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::{Page, upsert};
use crate::{entity::message, model::MessageRow};
use chat_links::error::Result;

fn row(m: message::Model) -> MessageRow {
    MessageRow {
        application_id: m.application_id,
        chat_number: m.chat_number,
        number: m.number,
        body: m.body,
        version: m.version,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

pub async fn find(
    db: &DatabaseConnection,
    app_id: i64,
    chat_number: i64,
    number: i64,
) -> Result<Option<MessageRow>> {
    Ok(message::Entity::find()
        .filter(message::Column::ApplicationId.eq(app_id))
        .filter(message::Column::ChatNumber.eq(chat_number))
        .filter(message::Column::Number.eq(number))
        .one(db)
        .await?
        .map(row))
}

pub async fn list(
    db: &DatabaseConnection,
    app_id: i64,
    chat_number: i64,
    after: i64,
    limit: u64,
) -> Result<Page<MessageRow>> {
    let rows = message::Entity::find()
        .filter(message::Column::ApplicationId.eq(app_id))
        .filter(message::Column::ChatNumber.eq(chat_number))
        .filter(message::Column::Number.gt(after))
        .order_by_asc(message::Column::Number)
        .limit(limit + 1)
        .all(db)
        .await?;
    Ok(Page::from_overfetch(
        rows.into_iter().map(row).collect(),
        limit,
        |m| m.number,
    ))
}

/// The highest persisted message number of a chat, 0 if none.
pub async fn max_number(db: &impl ConnectionTrait, app_id: i64, chat_number: i64) -> Result<i64> {
    let max: Option<Option<i64>> = message::Entity::find()
        .select_only()
        .column_as(message::Column::Number.max(), "max")
        .filter(message::Column::ApplicationId.eq(app_id))
        .filter(message::Column::ChatNumber.eq(chat_number))
        .into_tuple()
        .one(db)
        .await?;
    Ok(max.flatten().unwrap_or(0))
}

/// Counts persisted messages of a chat (tests and benchmarks use it to
/// check that every accepted write landed exactly once).
pub async fn count(db: &DatabaseConnection, app_id: i64, chat_number: i64) -> Result<u64> {
    use sea_orm::PaginatorTrait;
    Ok(message::Entity::find()
        .filter(message::Column::ApplicationId.eq(app_id))
        .filter(message::Column::ChatNumber.eq(chat_number))
        .count(db)
        .await?)
}

/// Writes every row in one statement; each row only moves forward.
/// Writes the rows (version-guarded), then marks their chats for the
/// next count recount. The mark is a second statement on purpose: if the
/// writer dies between the two, its job is redelivered and marks again
/// before it is acked, so no transaction is needed around them.
pub async fn upsert_all(db: &impl ConnectionTrait, rows: &[MessageRow]) -> Result<()> {
    upsert::messages(db, rows).await?;
    super::counts::mark_chats(db, rows.iter().map(|r| (r.application_id, r.chat_number))).await
}

/// Up to `limit` messages with an internal id above `after_id`, in id
/// order, with their ids: a resumable scan of the whole table, or (with
/// `since`) of the rows updated since then.
pub async fn scan(
    db: &DatabaseConnection,
    since: Option<chrono::DateTime<chrono::Utc>>,
    after_id: i64,
    limit: u64,
) -> Result<Vec<(i64, MessageRow)>> {
    let mut query = message::Entity::find().filter(message::Column::Id.gt(after_id));
    if let Some(since) = since {
        query = query.filter(message::Column::UpdatedAt.gte(since));
    }
    Ok(query
        .order_by_asc(message::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.id, row(m)))
        .collect())
}

/// One page of a chat's messages by number, for re-sending a chat.
pub async fn of_chat(
    db: &DatabaseConnection,
    app_id: i64,
    chat_number: i64,
    after: i64,
    limit: u64,
) -> Result<Vec<MessageRow>> {
    Ok(list(db, app_id, chat_number, after, limit).await?.items)
}

/// Every persisted message number of a chat, ascending, with when its
/// row was last written.
pub async fn numbers_of_chat(
    db: &DatabaseConnection,
    app_id: i64,
    chat_number: i64,
) -> Result<Vec<(i64, chrono::DateTime<chrono::Utc>)>> {
    Ok(message::Entity::find()
        .select_only()
        .column(message::Column::Number)
        .column(message::Column::UpdatedAt)
        .filter(message::Column::ApplicationId.eq(app_id))
        .filter(message::Column::ChatNumber.eq(chat_number))
        .order_by_asc(message::Column::Number)
        .into_tuple()
        .all(db)
        .await?)
}

/// The persisted messages of a chat with these numbers, ascending.
pub async fn with_numbers(
    db: &DatabaseConnection,
    app_id: i64,
    chat_number: i64,
    numbers: &[i64],
) -> Result<Vec<MessageRow>> {
    if numbers.is_empty() {
        return Ok(Vec::new());
    }
    Ok(message::Entity::find()
        .filter(message::Column::ApplicationId.eq(app_id))
        .filter(message::Column::ChatNumber.eq(chat_number))
        .filter(message::Column::Number.is_in(numbers.iter().copied()))
        .order_by_asc(message::Column::Number)
        .all(db)
        .await?
        .into_iter()
        .map(row)
        .collect())
}

/// Persisted message counts of every chat that has messages.
pub async fn counts_per_chat(db: &DatabaseConnection) -> Result<Vec<((i64, i64), u64)>> {
    let rows: Vec<(i64, i64, i64)> = message::Entity::find()
        .select_only()
        .column(message::Column::ApplicationId)
        .column(message::Column::ChatNumber)
        .column_as(message::Column::Id.count(), "n")
        .group_by(message::Column::ApplicationId)
        .group_by(message::Column::ChatNumber)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(a, c, n)| ((a, c), n as u64))
        .collect())
}

/// How many messages are persisted in all.
pub async fn total(db: &DatabaseConnection) -> Result<u64> {
    use sea_orm::PaginatorTrait;
    Ok(message::Entity::find().count(db).await?)
}
