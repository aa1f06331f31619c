//! `Idempotency-Key` records of the embedded profile: per scope and key
//! digest, the request's fingerprint, the run holding it and its lease, the
//! state a write accepted under it, a planned token, and the stored
//! response. Created on every backend so one schema serves both profiles;
//! with Redis, the records live there and this table stays empty.
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0009_idempotency_keys"
    }
}

#[derive(Iden)]
enum IdempotencyKeys {
    Table,
    Scope,
    Key,
    Fingerprint,
    Owner,
    LeaseUntil,
    Accepted,
    Planned,
    Status,
    Headers,
    Body,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(IdempotencyKeys::Scope)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyKeys::Key)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyKeys::Fingerprint)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyKeys::Owner)
                            .string_len(64)
                            .not_null(),
                    )
                    // Milliseconds since the epoch, as every time below.
                    .col(
                        ColumnDef::new(IdempotencyKeys::LeaseUntil)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(IdempotencyKeys::Accepted).text())
                    .col(ColumnDef::new(IdempotencyKeys::Planned).string_len(64))
                    .col(ColumnDef::new(IdempotencyKeys::Status).integer())
                    .col(ColumnDef::new(IdempotencyKeys::Headers).text())
                    .col(ColumnDef::new(IdempotencyKeys::Body).blob())
                    .col(
                        ColumnDef::new(IdempotencyKeys::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::Scope)
                            .col(IdempotencyKeys::Key),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_idempotency_keys_expires")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(IdempotencyKeys::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
