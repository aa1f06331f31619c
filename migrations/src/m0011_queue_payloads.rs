//! Job payloads in a table of their own, beside `queue_jobs`.
//!
//! An embedded index job carries its group's message rows, several KiB of
//! JSON, which SQLite stores on overflow pages. Every column after it in
//! the row (the lease, the state, the timestamps) sat on those pages too,
//! and a claim or an ack, which change a few small columns, rewrote the whole
//! row with its payload: each job's payload was written three times. In
//! `queue_payloads` it is written once, read once by the claim, and
//! deleted with its job. Created on every backend, as `queue_jobs` is; on
//! MySQL both stay empty.
//!
//! On SQLite, jobs are enqueued into the view `queue_jobs_with_payload`,
//! whose trigger writes both rows: one statement, as before, where two
//! would each cost a round trip to SQLite's thread in the intake's commit.
use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0011_queue_payloads"
    }
}

#[derive(Iden)]
enum QueuePayloads {
    Table,
    Id,
    Payload,
}

#[derive(Iden)]
enum QueueJobs {
    Table,
    Payload,
}

const SQLITE_OBJECTS: [&str; 3] = [
    "CREATE TRIGGER IF NOT EXISTS queue_jobs_payload_delete AFTER DELETE ON queue_jobs \
       BEGIN DELETE FROM queue_payloads WHERE id = OLD.id; END",
    "CREATE VIEW IF NOT EXISTS queue_jobs_with_payload AS \
       SELECT j.queue, p.payload, j.attempt, j.run_at, j.dead, j.errors, j.enqueued_at, j.trace \
       FROM queue_jobs j JOIN queue_payloads p ON p.id = j.id",
    // Inside a trigger, last_insert_rowid() is the row the trigger itself
    // just inserted: the job's.
    "CREATE TRIGGER IF NOT EXISTS queue_jobs_with_payload_insert \
       INSTEAD OF INSERT ON queue_jobs_with_payload BEGIN \
         INSERT INTO queue_jobs (queue, attempt, run_at, dead, errors, enqueued_at, trace) \
           VALUES (NEW.queue, NEW.attempt, NEW.run_at, NEW.dead, NEW.errors, NEW.enqueued_at, \
             NEW.trace); \
         INSERT INTO queue_payloads (id, payload) VALUES (last_insert_rowid(), NEW.payload); \
       END",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Sqlite {
            // The id is its job's. Spelled out: only `INTEGER PRIMARY KEY`
            // makes it SQLite's rowid, so a payload is found with no index.
            db.execute_unprepared(
                "CREATE TABLE IF NOT EXISTS queue_payloads \
                 (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
            )
            .await?;
        } else {
            manager
                .create_table(
                    Table::create()
                        .table(QueuePayloads::Table)
                        .if_not_exists()
                        .col(
                            ColumnDef::new(QueuePayloads::Id)
                                .big_integer()
                                .not_null()
                                .primary_key(),
                        )
                        .col(ColumnDef::new(QueuePayloads::Payload).text().not_null())
                        .to_owned(),
                )
                .await?;
        }
        db.execute_unprepared(
            "INSERT INTO queue_payloads (id, payload) SELECT id, payload FROM queue_jobs",
        )
        .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(QueueJobs::Table)
                    .drop_column(QueueJobs::Payload)
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Sqlite {
            for sql in SQLITE_OBJECTS {
                db.execute_unprepared(sql).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Sqlite {
            for sql in [
                "DROP TRIGGER IF EXISTS queue_jobs_with_payload_insert",
                "DROP VIEW IF EXISTS queue_jobs_with_payload",
                "DROP TRIGGER IF EXISTS queue_jobs_payload_delete",
            ] {
                db.execute_unprepared(sql).await?;
            }
        }
        manager
            .alter_table(
                Table::alter()
                    .table(QueueJobs::Table)
                    .add_column(
                        ColumnDef::new(QueueJobs::Payload)
                            .text()
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared(
            "UPDATE queue_jobs SET payload = COALESCE( \
             (SELECT p.payload FROM queue_payloads p WHERE p.id = queue_jobs.id), '')",
        )
        .await?;
        manager
            .drop_table(Table::drop().table(QueuePayloads::Table).to_owned())
            .await
    }
}
