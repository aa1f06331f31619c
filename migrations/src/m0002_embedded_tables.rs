//! Tables that back the embedded profile: counters and read-your-writes
//! entries for number allocation, and the durable job queue.
//!
//! They are created on every backend so that one schema serves both
//! profiles; on MySQL + Redis they stay empty.
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_embedded_tables"
    }
}

#[derive(Iden)]
enum Counters {
    Table,
    Scope,
    Value,
}

#[derive(Iden)]
enum PendingRows {
    Table,
    Scope,
    Version,
    State,
    ExpiresAt,
}

#[derive(Iden)]
enum QueueJobs {
    Table,
    Id,
    Queue,
    Payload,
    Attempt,
    RunAt,
    LeaseOwner,
    LeaseUntil,
    Dead,
    Errors,
    EnqueuedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Counters::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Counters::Scope)
                            .string_len(191)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Counters::Value).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PendingRows::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(PendingRows::Scope)
                            .string_len(191)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(PendingRows::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(PendingRows::State).text().not_null())
                    .col(
                        ColumnDef::new(PendingRows::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QueueJobs::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(QueueJobs::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(QueueJobs::Queue).string_len(64).not_null())
                    .col(ColumnDef::new(QueueJobs::Payload).text().not_null())
                    .col(
                        ColumnDef::new(QueueJobs::Attempt)
                            .integer()
                            .not_null()
                            .default(1),
                    )
                    .col(ColumnDef::new(QueueJobs::RunAt).big_integer().not_null())
                    .col(ColumnDef::new(QueueJobs::LeaseOwner).string_len(128).null())
                    .col(ColumnDef::new(QueueJobs::LeaseUntil).big_integer().null())
                    .col(
                        ColumnDef::new(QueueJobs::Dead)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(QueueJobs::Errors)
                            .text()
                            .not_null()
                            .default("[]"),
                    )
                    .col(
                        ColumnDef::new(QueueJobs::EnqueuedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // MySQL has no CREATE INDEX IF NOT EXISTS; a re-run after a partial
        // failure must not trip over an index that already exists.
        if !manager
            .has_index("queue_jobs", "ix_queue_jobs_ready")
            .await?
        {
            manager
                .create_index(
                    Index::create()
                        .name("ix_queue_jobs_ready")
                        .table(QueueJobs::Table)
                        .col(QueueJobs::Queue)
                        .col(QueueJobs::Dead)
                        .col(QueueJobs::RunAt)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(QueueJobs::Table).if_exists().to_owned())
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(PendingRows::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Counters::Table).if_exists().to_owned())
            .await
    }
}
