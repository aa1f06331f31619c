//! Applications, chats and messages.
//!
//! Messages are keyed by `(application_id, chat_number, number)` rather than
//! by the chat's row id, so a message can be persisted before its chat's own
//! job has landed. Every chat and message row carries the `version` that the
//! API took when it accepted the write; upserts only move a row forward.
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_core_tables"
    }
}

#[derive(Iden)]
enum Applications {
    Table,
    Id,
    Token,
    Name,
    ChatsCount,
    CreatedAt,
    UpdatedAt,
}

#[derive(Iden)]
enum Chats {
    Table,
    Id,
    ApplicationId,
    Number,
    Name,
    MessagesCount,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(Iden)]
enum Messages {
    Table,
    Id,
    ApplicationId,
    ChatNumber,
    Number,
    Body,
    Version,
    CreatedAt,
    UpdatedAt,
}

/// A UTC timestamp with microseconds: what the API returns at once (from a
/// pending write) must equal what it returns after the row is persisted.
fn timestamp(col: impl IntoIden, mysql: bool) -> ColumnDef {
    let mut def = ColumnDef::new(col);
    if mysql {
        def.custom(Alias::new("DATETIME(6)"));
    } else {
        def.timestamp_with_time_zone();
    }
    def.not_null().to_owned()
}

/// Tokens are compared byte for byte: under MySQL's default
/// case-insensitive collations two tokens differing only in case would
/// match each other.
fn token_column(mysql: bool) -> ColumnDef {
    let mut def = ColumnDef::new(Applications::Token);
    if mysql {
        def.custom(Alias::new(
            "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin",
        ));
    } else {
        def.string_len(64);
    }
    def.not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mysql = manager.get_database_backend() == DbBackend::MySql;

        manager
            .create_table(
                Table::create()
                    .table(Applications::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Applications::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(token_column(mysql))
                    .col(
                        ColumnDef::new(Applications::Name)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Applications::ChatsCount)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(timestamp(Applications::CreatedAt, mysql))
                    .col(timestamp(Applications::UpdatedAt, mysql))
                    .index(
                        Index::create()
                            .name("ux_applications_token")
                            .col(Applications::Token)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Chats::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Chats::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Chats::ApplicationId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Chats::Number).big_integer().not_null())
                    .col(ColumnDef::new(Chats::Name).string_len(255).null())
                    .col(
                        ColumnDef::new(Chats::MessagesCount)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(Chats::Version).big_integer().not_null())
                    .col(timestamp(Chats::CreatedAt, mysql))
                    .col(timestamp(Chats::UpdatedAt, mysql))
                    .check(Expr::col(Chats::Number).gt(0))
                    .index(
                        Index::create()
                            .name("ux_chats_app_number")
                            .col(Chats::ApplicationId)
                            .col(Chats::Number)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;

        let mut body = ColumnDef::new(Messages::Body);
        if mysql {
            // TEXT caps at 64 KiB in bytes; the body limit is configurable
            // and counted in bytes, so leave head-room.
            body.custom(Alias::new("MEDIUMTEXT"));
        } else {
            body.text();
        }
        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Messages::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Messages::ApplicationId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Messages::ChatNumber)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Messages::Number).big_integer().not_null())
                    .col(body.not_null())
                    .col(ColumnDef::new(Messages::Version).big_integer().not_null())
                    .col(timestamp(Messages::CreatedAt, mysql))
                    .col(timestamp(Messages::UpdatedAt, mysql))
                    .check(Expr::col(Messages::Number).gt(0))
                    .check(Expr::col(Messages::ChatNumber).gt(0))
                    .index(
                        Index::create()
                            .name("ux_messages_app_chat_number")
                            .col(Messages::ApplicationId)
                            .col(Messages::ChatNumber)
                            .col(Messages::Number)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Messages::Table.into_iden(),
            Chats::Table.into_iden(),
            Applications::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
