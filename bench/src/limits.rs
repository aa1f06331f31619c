//! The physical limits the system is compared with, measured in the same
//! run on the same machine (the bare HTTP handlers are in `bare`):
//! - raw multi-row `INSERT`s of the message row shape straight into the
//!   same database, in batches of the worker's size, with no queue;
//! - raw bulk adds of message documents straight into the same search
//!   index, in batches of the worker's size, with no queue.
use std::time::{Duration, Instant};

use chat_search::{SearchIndex, Target};
use chat_store::model::MessageRow;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value};

/// Raw rows go to a copy of the messages table (same columns, keys and
/// indexes), dropped afterwards: deleting them from the real table would
/// leave the database purging in the background through the next runs.
const SCRATCH: &str = "bench_raw_messages";

pub struct RawInsert {
    rows: usize,
    batches: usize,
    elapsed: std::time::Duration,
    /// Each statement's own time, for its tail: a p99 lag is bounded by a
    /// slow write, not a mean one.
    statement_times: Vec<std::time::Duration>,
}

impl RawInsert {
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64()
    }

    /// Mean time of one batch: the bulk-write time in the lag bound.
    pub fn batch_ms(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e3 / self.batches.max(1) as f64
    }

    /// p99 of one statement's time, in ms.
    pub fn batch_p99_ms(&self) -> f64 {
        crate::stats::Summary::of(self.statement_times.clone(), std::time::Duration::ZERO).p99_ms
    }

    /// Two runs, as if back to back.
    pub fn add(mut self, other: RawInsert) -> RawInsert {
        self.statement_times.extend(other.statement_times);
        RawInsert {
            rows: self.rows + other.rows,
            batches: self.batches + other.batches,
            elapsed: self.elapsed + other.elapsed,
            statement_times: self.statement_times,
        }
    }
}

/// Inserts `rows` message rows in batches of `batch`, one statement (and
/// so one transaction) per batch, into a scratch copy of the table.
pub async fn raw_insert(
    db: &DatabaseConnection,
    rows: usize,
    batch: usize,
) -> anyhow::Result<RawInsert> {
    let backend = db.get_database_backend();
    create_scratch(db).await?;
    let now = chrono::Utc::now();
    let one = "(?, ?, ?, ?, ?, ?, ?)";
    let started = Instant::now();
    let mut written = 0;
    let mut batches = 0;
    let mut statement_times = Vec::with_capacity(rows / batch.max(1) + 1);
    while written < rows {
        let n = batch.min(rows - written);
        let sql = format!(
            "INSERT INTO {SCRATCH} (application_id, chat_number, number, body, version, created_at, updated_at) VALUES {}",
            vec![one; n].join(", ")
        );
        let mut values: Vec<Value> = Vec::with_capacity(n * 7);
        for i in written..written + n {
            let number = i as i64 + 1;
            values.extend([
                1i64.into(),
                1i64.into(),
                number.into(),
                crate::client::body(i).into(),
                number.into(),
                now.into(),
                now.into(),
            ]);
        }
        let sent = Instant::now();
        db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        statement_times.push(sent.elapsed());
        written += n;
        batches += 1;
    }
    let elapsed = started.elapsed();
    db.execute_unprepared(&format!("DROP TABLE {SCRATCH}"))
        .await?;
    Ok(RawInsert {
        rows,
        batches,
        elapsed,
        statement_times,
    })
}

async fn create_scratch(db: &DatabaseConnection) -> anyhow::Result<()> {
    db.execute_unprepared(&format!("DROP TABLE IF EXISTS {SCRATCH}"))
        .await?;
    let sql = match db.get_database_backend() {
        DbBackend::MySql => format!("CREATE TABLE {SCRATCH} LIKE messages"),
        _ => {
            let row = db
                .query_one_raw(Statement::from_string(
                    DbBackend::Sqlite,
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'",
                ))
                .await?
                .ok_or_else(|| anyhow::anyhow!("no messages table"))?;
            let create: String = row.try_get_by_index(0)?;
            create.replacen("messages", SCRATCH, 1)
        }
    };
    db.execute_unprepared(&sql).await?;
    Ok(())
}

/// Documents indexed per second by bulk adds of `docs` message documents
/// (in batches of `batch`, one after another) into `index`, under an
/// application id of their own so that they never meet the system's.
pub async fn raw_index(
    index: &dyn SearchIndex,
    application_id: i64,
    chats: usize,
    docs: usize,
    batch: usize,
) -> anyhow::Result<(f64, Duration)> {
    let now = chrono::Utc::now();
    let started = Instant::now();
    let mut written = 0;
    while written < docs {
        let n = batch.min(docs - written);
        let rows: Vec<MessageRow> = (written..written + n)
            .map(|i| MessageRow {
                application_id,
                chat_number: 1 + (i % chats.max(1)) as i64,
                number: 1 + (i / chats.max(1)) as i64,
                body: crate::client::body(i),
                version: 1,
                created_at: now,
                updated_at: now,
            })
            .collect();
        index.index(&Target::Live, &rows).await?;
        written += n;
    }
    let elapsed = started.elapsed();
    Ok((docs as f64 / elapsed.as_secs_f64(), elapsed))
}
