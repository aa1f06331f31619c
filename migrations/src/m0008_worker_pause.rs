//! Why a worker is paused: the outage of a backend it writes to, which its
//! heartbeat reports and the dashboard shows beside it.
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0008_worker_pause"
    }
}

#[derive(Iden)]
enum JobWorkers {
    Table,
    Paused,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(JobWorkers::Table)
                    .add_column(ColumnDef::new(JobWorkers::Paused).string_len(512).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(JobWorkers::Table)
                    .drop_column(JobWorkers::Paused)
                    .to_owned(),
            )
            .await
    }
}
