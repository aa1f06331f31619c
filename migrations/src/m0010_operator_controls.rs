//! What operators switch on the dashboard and must outlive a restart: the
//! queues they paused (workers stop claiming from them) and the sessions
//! they logged out of (a copied cookie must not open the dashboard again);
//! and a key on each audit row that names its job across retries, since a
//! job's handle changes each time it is retried on Redis. Also two indexes
//! on the per-minute figures, now kept for a day: by minute, for the last
//! hour that every overview reads (and for the trim), and by field and
//! minute, for the day's chart, which reads only the done and failed
//! counts.
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0010_operator_controls"
    }
}

#[derive(Iden)]
enum QueuePauses {
    Table,
    Queue,
    PausedBy,
    PausedAt,
}

#[derive(Iden)]
enum AdminAudit {
    Table,
    Queue,
    JobKey,
}

#[derive(Iden)]
enum JobPulse {
    Table,
    Minute,
    Field,
}

#[derive(Iden)]
enum AdminRevokedSessions {
    Table,
    Signature,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(QueuePauses::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(QueuePauses::Queue)
                            .string_len(32)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(QueuePauses::PausedBy)
                            .string_len(128)
                            .not_null(),
                    )
                    // Milliseconds since the epoch.
                    .col(
                        ColumnDef::new(QueuePauses::PausedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AdminRevokedSessions::Table)
                    .if_not_exists()
                    // The session cookie's HMAC, hex: what names a session.
                    .col(
                        ColumnDef::new(AdminRevokedSessions::Signature)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    // When the cookie would have expired anyway, in ms since
                    // the epoch: after that the row can go.
                    .col(
                        ColumnDef::new(AdminRevokedSessions::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AdminAudit::Table)
                    .add_column(ColumnDef::new(AdminAudit::JobKey).string_len(32).null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("admin_audit_by_job_key")
                    .table(AdminAudit::Table)
                    .col(AdminAudit::Queue)
                    .col(AdminAudit::JobKey)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("job_pulse_by_minute")
                    .table(JobPulse::Table)
                    .col(JobPulse::Minute)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("job_pulse_by_field")
                    .table(JobPulse::Table)
                    .col(JobPulse::Field)
                    .col(JobPulse::Minute)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for index in ["job_pulse_by_minute", "job_pulse_by_field"] {
            manager
                .drop_index(Index::drop().name(index).table(JobPulse::Table).to_owned())
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("admin_audit_by_job_key")
                    .table(AdminAudit::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AdminAudit::Table)
                    .drop_column(AdminAudit::JobKey)
                    .to_owned(),
            )
            .await?;
        for table in [
            QueuePauses::Table.into_iden(),
            AdminRevokedSessions::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
