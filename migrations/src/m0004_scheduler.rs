//! The scheduler's tables: the run history (whose unique `(task, tick_at)`
//! is also what lets exactly one replica run each tick), and the count
//! marks, the dirty set of parents whose counts a write may have changed.
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0004_scheduler"
    }
}

#[derive(Iden)]
enum SchedulerRuns {
    Table,
    Id,
    Task,
    TickAt,
    Owner,
    StartedAt,
    HeartbeatAt,
    FinishedAt,
    RowsTouched,
    Outcome,
    Detail,
    Error,
}

#[derive(Iden)]
enum CountMarks {
    Table,
    Id,
    ApplicationId,
    ChatNumber,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SchedulerRuns::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(SchedulerRuns::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(SchedulerRuns::Task)
                            .string_len(32)
                            .not_null(),
                    )
                    // Seconds since the epoch: the tick's scheduled time, the
                    // same on every replica, whatever their clocks say.
                    .col(
                        ColumnDef::new(SchedulerRuns::TickAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SchedulerRuns::Owner)
                            .string_len(128)
                            .not_null(),
                    )
                    // Milliseconds since the epoch, the same on both backends.
                    .col(
                        ColumnDef::new(SchedulerRuns::StartedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SchedulerRuns::HeartbeatAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(SchedulerRuns::FinishedAt).big_integer())
                    .col(
                        ColumnDef::new(SchedulerRuns::RowsTouched)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(SchedulerRuns::Outcome)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(SchedulerRuns::Detail).text())
                    .col(ColumnDef::new(SchedulerRuns::Error).text())
                    .index(
                        Index::create()
                            .name("ux_scheduler_runs_tick")
                            .col(SchedulerRuns::Task)
                            .col(SchedulerRuns::TickAt)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CountMarks::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(CountMarks::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(CountMarks::ApplicationId)
                            .big_integer()
                            .not_null(),
                    )
                    // 0 marks the application's chats_count; a chat number
                    // marks that chat's messages_count.
                    .col(
                        ColumnDef::new(CountMarks::ChatNumber)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CountMarks::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(SchedulerRuns::Table).to_owned())
            .await
    }
}
