//! The dashboard's audit trail: one row per operator action (who, what,
//! on which job, when), kept so that every retry or discard can be
//! traced back to a person.
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0006_admin_audit"
    }
}

#[derive(Iden)]
enum AdminAudit {
    Table,
    Id,
    At,
    Actor,
    Action,
    Queue,
    JobId,
    Detail,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AdminAudit::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AdminAudit::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    // Milliseconds since the epoch.
                    .col(ColumnDef::new(AdminAudit::At).big_integer().not_null())
                    .col(ColumnDef::new(AdminAudit::Actor).string_len(128).not_null())
                    .col(ColumnDef::new(AdminAudit::Action).string_len(32).not_null())
                    .col(ColumnDef::new(AdminAudit::Queue).string_len(32).not_null())
                    .col(ColumnDef::new(AdminAudit::JobId).string_len(64))
                    .col(ColumnDef::new(AdminAudit::Detail).text())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(AdminAudit::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
