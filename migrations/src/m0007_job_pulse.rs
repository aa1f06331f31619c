//! What the dashboard reads instead of scanning job history:
//! - `queue_counts`: the number of dead and done rows per queue of the
//!   embedded queue, kept by SQLite triggers on `queue_jobs`, so counting a
//!   million finished jobs is one primary-key read;
//! - `job_pulse`: per-minute figures (jobs done and failed, latency
//!   histogram buckets) that every worker adds to, on both profiles;
//! - `job_workers`: one row per running worker, refreshed by its heartbeat;
//! - `queue_jobs.ready_at`: when a settled job last became claimable, kept
//!   as its settle overwrites `run_at`, so its page can say how long it
//!   waited.
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0007_job_pulse"
    }
}

#[derive(Iden)]
enum QueueJobs {
    Table,
    ReadyAt,
}

#[derive(Iden)]
enum QueueCounts {
    Table,
    Queue,
    State,
    N,
}

#[derive(Iden)]
enum JobPulse {
    Table,
    Series,
    Minute,
    Field,
    N,
}

#[derive(Iden)]
enum JobWorkers {
    Table,
    Name,
    Queue,
    Host,
    Pid,
    StartedAt,
    BeatAt,
    InFlight,
    Processed,
    Failed,
}

/// Each keeps `queue_counts` equal to `COUNT(*)` of the settled states
/// (1 dead, 2 done); live rows (0) are the backlog and are not counted
/// here. Every path that changes a row's state is covered: the insert
/// (only ever live in practice), the settle and revive updates, and the
/// trims and discards that delete.
const SQLITE_TRIGGERS: [&str; 4] = [
    "INSERT INTO queue_counts (queue, state, n) \
       SELECT queue, dead, COUNT(*) FROM queue_jobs WHERE dead <> 0 GROUP BY queue, dead \
       ON CONFLICT (queue, state) DO UPDATE SET n = excluded.n",
    "CREATE TRIGGER IF NOT EXISTS queue_jobs_count_insert AFTER INSERT ON queue_jobs \
       WHEN NEW.dead <> 0 BEGIN \
         INSERT INTO queue_counts (queue, state, n) VALUES (NEW.queue, NEW.dead, 1) \
           ON CONFLICT (queue, state) DO UPDATE SET n = n + 1; \
       END",
    "CREATE TRIGGER IF NOT EXISTS queue_jobs_count_update AFTER UPDATE OF dead ON queue_jobs \
       WHEN NEW.dead <> OLD.dead BEGIN \
         UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.dead; \
         INSERT INTO queue_counts (queue, state, n) SELECT NEW.queue, NEW.dead, 1 \
           WHERE NEW.dead <> 0 \
           ON CONFLICT (queue, state) DO UPDATE SET n = n + 1; \
       END",
    "CREATE TRIGGER IF NOT EXISTS queue_jobs_count_delete AFTER DELETE ON queue_jobs \
       WHEN OLD.dead <> 0 BEGIN \
         UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.dead; \
       END",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(QueueCounts::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(QueueCounts::Queue).string_len(32).not_null())
                    .col(
                        ColumnDef::new(QueueCounts::State)
                            .small_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(QueueCounts::N).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(QueueCounts::Queue)
                            .col(QueueCounts::State),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(JobPulse::Table)
                    .if_not_exists()
                    // A queue name, or a write stage for the lag series.
                    .col(ColumnDef::new(JobPulse::Series).string_len(32).not_null())
                    // Minutes since the epoch.
                    .col(ColumnDef::new(JobPulse::Minute).big_integer().not_null())
                    .col(ColumnDef::new(JobPulse::Field).string_len(16).not_null())
                    .col(ColumnDef::new(JobPulse::N).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(JobPulse::Series)
                            .col(JobPulse::Minute)
                            .col(JobPulse::Field),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(JobWorkers::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(JobWorkers::Name)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(JobWorkers::Queue).string_len(32).not_null())
                    .col(ColumnDef::new(JobWorkers::Host).string_len(255).not_null())
                    .col(ColumnDef::new(JobWorkers::Pid).big_integer().not_null())
                    // Milliseconds since the epoch.
                    .col(
                        ColumnDef::new(JobWorkers::StartedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(JobWorkers::BeatAt).big_integer().not_null())
                    .col(
                        ColumnDef::new(JobWorkers::InFlight)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(JobWorkers::Processed)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(JobWorkers::Failed).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(QueueJobs::Table)
                    .add_column(ColumnDef::new(QueueJobs::ReadyAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        // Only the embedded profile queues jobs in `queue_jobs`; on MySQL the
        // table stays empty and needs no counting.
        if manager.get_database_backend() == DbBackend::Sqlite {
            let db = manager.get_connection();
            for sql in SQLITE_TRIGGERS {
                db.execute_unprepared(sql).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Sqlite {
            let db = manager.get_connection();
            for t in ["insert", "update", "delete"] {
                db.execute_unprepared(&format!("DROP TRIGGER IF EXISTS queue_jobs_count_{t}"))
                    .await?;
            }
        }
        manager
            .alter_table(
                Table::alter()
                    .table(QueueJobs::Table)
                    .drop_column(QueueJobs::ReadyAt)
                    .to_owned(),
            )
            .await?;
        for table in [
            QueueCounts::Table.to_string(),
            JobPulse::Table.to_string(),
            JobWorkers::Table.to_string(),
        ] {
            manager
                .drop_table(
                    Table::drop()
                        .table(Alias::new(table))
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
