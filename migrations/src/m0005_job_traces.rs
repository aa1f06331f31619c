//! The trace context each embedded-queue job carries, so the worker's
//! spans continue the request that enqueued it. Redis keeps the same value
//! as a stream field; on MySQL the table stays empty.
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0005_job_traces"
    }
}

#[derive(Iden)]
enum QueueJobs {
    Table,
    Trace,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A W3C traceparent is 55 characters; NULL when the request was
        // not traced.
        manager
            .alter_table(
                Table::alter()
                    .table(QueueJobs::Table)
                    .add_column(ColumnDef::new(QueueJobs::Trace).string_len(128).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(QueueJobs::Table)
                    .drop_column(QueueJobs::Trace)
                    .to_owned(),
            )
            .await
    }
}
