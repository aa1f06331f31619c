//! Recomputes the denormalised counts from the rows themselves.
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::error::Result;

/// Sets every `messages_count` and `chats_count` to what the tables hold.
/// Correlated sub-queries keep it one statement per table on both backends.
pub async fn recount_all(db: &DatabaseConnection) -> Result<()> {
    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_string(
        backend,
        "UPDATE chats SET messages_count = (SELECT COUNT(*) FROM messages m \
         WHERE m.application_id = chats.application_id AND m.chat_number = chats.number)",
    ))
    .await?;
    db.execute_raw(Statement::from_string(
        backend,
        "UPDATE applications SET chats_count = (SELECT COUNT(*) FROM chats c \
         WHERE c.application_id = applications.id)",
    ))
    .await?;
    Ok(())
}
