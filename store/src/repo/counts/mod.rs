//! Recomputing the denormalised counts from the rows themselves.
//!
//! Every bulk write also appends *count marks*: one row in `count_marks`
//! per parent whose count it may have changed (chat number 0 stands for
//! the application's `chats_count`). An incremental recount reads a batch
//! of marks, recounts exactly those parents, then deletes exactly the
//! marks it read, by their ids. Not "every id up to the last one read":
//! InnoDB hands out auto-increment ids before commit, so a mark with a
//! lower id can become visible after the read, and such a range delete
//! would remove it unseen. Because marks live in the database, a Redis
//! restart cannot lose them, and a write that commits without its mark
//! (the worker died in between) is redelivered and marks again before its
//! job is acked.
//!
//! A run consumes every mark that existed when it started (up to the
//! highest id then), whatever their number, so the table holds at most
//! what the writes add in one interval plus one run; marks that arrive
//! during a run wait for the next, so a run always ends.
//!
//! Every recount is one statement per batch of parents, on both backends,
//! and only rewrites a count that differs, so its affected rows are the
//! drift it repaired.
use std::collections::BTreeSet;

use sea_orm::{
    ConnectionTrait, DbBackend, FromQueryResult, IsolationLevel, Statement, TransactionSession,
    TransactionTrait, Value,
};
use serde::Serialize;

use super::sizes;
use chat_links::error::Result;

mod recount;

pub use recount::recount_all;
use recount::*;

/// Parents marked or recounted per statement; a power of two, so a full
/// statement of marks needs no padding.
const PARENTS_PER_STATEMENT: usize = 512;

/// What a recount looked at and what it changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecountReport {
    /// Chats whose `messages_count` was recomputed.
    pub chats_checked: u64,
    /// Of those, the ones whose stored count was wrong and got rewritten.
    pub chats_repaired: u64,
    pub applications_checked: u64,
    pub applications_repaired: u64,
    /// Count marks consumed (incremental runs only).
    pub marks: u64,
}

impl RecountReport {
    pub fn repaired(&self) -> u64 {
        self.chats_repaired + self.applications_repaired
    }

    fn add(&mut self, other: RecountReport) {
        self.chats_checked += other.chats_checked;
        self.chats_repaired += other.chats_repaired;
        self.applications_checked += other.applications_checked;
        self.applications_repaired += other.applications_repaired;
        self.marks += other.marks;
    }
}

/// Marks the chats of these `(application_id, chat_number)` pairs for an
/// incremental recount of their `messages_count`.
pub async fn mark_chats(
    db: &impl ConnectionTrait,
    chats: impl IntoIterator<Item = (i64, i64)>,
) -> Result<()> {
    insert_marks(db, chats.into_iter().collect()).await
}

/// Marks these applications for a recount of their `chats_count`.
pub async fn mark_applications(
    db: &impl ConnectionTrait,
    applications: impl IntoIterator<Item = i64>,
) -> Result<()> {
    insert_marks(db, applications.into_iter().map(|a| (a, 0)).collect()).await
}

/// Marks these chats' `messages_count` and their applications'
/// `chats_count`, in one statement.
pub async fn mark_chats_and_applications(
    db: &impl ConnectionTrait,
    chats: impl IntoIterator<Item = (i64, i64)>,
) -> Result<()> {
    let mut marks = BTreeSet::new();
    for (application, chat) in chats {
        marks.insert((application, chat));
        marks.insert((application, 0));
    }
    insert_marks(db, marks).await
}

async fn insert_marks(db: &impl ConnectionTrait, marks: BTreeSet<(i64, i64)>) -> Result<()> {
    let marks: Vec<_> = marks.into_iter().collect();
    for chunk in marks.chunks(PARENTS_PER_STATEMENT) {
        let chunk = sizes::pad(chunk);
        let sql = format!(
            "INSERT INTO count_marks (application_id, chat_number) VALUES {}",
            vec!["(?, ?)"; chunk.len()].join(", ")
        );
        let values: Vec<Value> = chunk
            .into_iter()
            .flat_map(|&(a, c)| [a.into(), c.into()])
            .collect();
        exec(db, &sql, values).await?;
    }
    Ok(())
}

#[derive(FromQueryResult)]
struct Mark {
    id: i64,
    application_id: i64,
    chat_number: i64,
}

/// Marks read per statement.
const MARKS_PER_READ: u64 = 10_000;
/// Id ranges deleted per statement.
const RANGES_PER_DELETE: usize = 200;

/// Consumes the marks with an id up to `ceiling` (all of them with
/// `None`) that name at most `parents` distinct parents: recounts each of
/// those parents once, however many marks name it, and deletes exactly
/// the marks it read. Returns what it did; `marks == 0` means none were
/// left below the ceiling.
pub async fn recount_marked(
    db: &(impl ConnectionTrait + TransactionTrait),
    parents: u64,
    ceiling: Option<i64>,
) -> Result<RecountReport> {
    Ok(consume(db, 0, ceiling.unwrap_or(i64::MAX), parents)
        .await?
        .report)
}

/// What one round of [`consume`] did.
struct Round {
    report: RecountReport,
    /// The last mark id it read.
    last: i64,
    /// It stopped at its parents' limit: marks below the ceiling remain.
    full: bool,
}

/// The ids read, as runs of consecutive ids: a multi-row insert takes
/// consecutive auto-increment ids, so a batch's marks are one run, and
/// an id a run does not cover was never read.
#[derive(Default)]
struct IdRuns(Vec<(i64, i64)>);

impl IdRuns {
    fn push(&mut self, id: i64) {
        match self.0.last_mut() {
            Some((_, hi)) if *hi + 1 == id => *hi = id,
            _ => self.0.push((id, id)),
        }
    }
}

/// [`recount_marked`] over the marks after id `after`.
async fn consume(
    db: &(impl ConnectionTrait + TransactionTrait),
    after: i64,
    ceiling: i64,
    max_parents: u64,
) -> Result<Round> {
    let backend = db.get_database_backend();
    let mut chats = BTreeSet::new();
    let mut applications = BTreeSet::new();
    let mut read = IdRuns::default();
    let mut marks = 0u64;
    let mut last = after;
    let mut full = false;
    'pages: loop {
        let page = Mark::find_by_statement(Statement::from_sql_and_values(
            backend,
            "SELECT id, application_id, chat_number FROM count_marks \
             WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
            [last.into(), ceiling.into(), (MARKS_PER_READ as i64).into()],
        ))
        .all(db)
        .await?;
        for m in &page {
            let known = if m.chat_number == 0 {
                applications.contains(&m.application_id)
            } else {
                chats.contains(&(m.application_id, m.chat_number))
            };
            if !known && (chats.len() + applications.len()) as u64 >= max_parents {
                full = true;
                break 'pages;
            }
            if m.chat_number == 0 {
                applications.insert(m.application_id);
            } else {
                chats.insert((m.application_id, m.chat_number));
            }
            read.push(m.id);
            marks += 1;
            last = m.id;
        }
        if (page.len() as u64) < MARKS_PER_READ {
            break;
        }
    }
    let mut report = RecountReport {
        marks,
        ..Default::default()
    };
    let chats: Vec<_> = chats.into_iter().collect();
    for chunk in chats.chunks(PARENTS_PER_STATEMENT) {
        report.chats_checked += chunk.len() as u64;
        report.chats_repaired += recount_chats(db, &chat_filter(chunk)).await?;
    }
    let applications: Vec<_> = applications.into_iter().collect();
    for chunk in applications.chunks(PARENTS_PER_STATEMENT) {
        report.applications_checked += chunk.len() as u64;
        let filter = Filter {
            sql: format!("id IN ({})", vec!["?"; chunk.len()].join(", ")),
            values: chunk.iter().map(|&a| a.into()).collect(),
        };
        report.applications_repaired += recount_applications(db, &filter).await?;
    }
    // Only after the recounts committed: a failure above leaves every mark
    // in place for the next run.
    for chunk in read.0.chunks(RANGES_PER_DELETE) {
        let filter = Filter {
            sql: vec!["id BETWEEN ? AND ?"; chunk.len()].join(" OR "),
            values: chunk
                .iter()
                .flat_map(|&(lo, hi)| [lo.into(), hi.into()])
                .collect(),
        };
        delete_marks(db, &filter).await?;
    }
    Ok(Round { report, last, full })
}

/// Deletes the marks in these id ranges. On MySQL in READ COMMITTED,
/// which takes no gap lock: in REPEATABLE READ a range delete also locks
/// the gap past its last row, where the writers append their marks.
async fn delete_marks(
    db: &(impl ConnectionTrait + TransactionTrait),
    filter: &Filter,
) -> Result<()> {
    let sql = format!("DELETE FROM count_marks WHERE {}", filter.sql);
    write_read_committed(db, None, &sql, &filter.values).await?;
    Ok(())
}

/// Runs the write `sql`; on MySQL in a READ COMMITTED transaction, after
/// `lock` (a locking read of the rows it writes) with the same values.
/// SQLite has one writer, so there the statement runs alone. Returns the
/// rows `sql` changed.
async fn write_read_committed(
    db: &(impl ConnectionTrait + TransactionTrait),
    lock: Option<&str>,
    sql: &str,
    values: &[Value],
) -> Result<u64> {
    if db.get_database_backend() != DbBackend::MySql {
        return exec(db, sql, values.to_vec()).await;
    }
    let txn = db
        .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
        .await?;
    if let Some(lock) = lock {
        exec(&txn, lock, values.to_vec()).await?;
    }
    let changed = exec(&txn, sql, values.to_vec()).await?;
    txn.commit().await?;
    Ok(changed)
}

/// Consumes every mark that existed when it was called, in rounds of at
/// most `parents` distinct parents; each round recounts a parent once,
/// however many of its marks it read.
pub async fn recount_dirty(
    db: &(impl ConnectionTrait + TransactionTrait),
    parents: u64,
) -> Result<RecountReport> {
    let mut total = RecountReport::default();
    let Some(ceiling) = highest_mark(db).await? else {
        return Ok(total);
    };
    // One pass in id order: a mark that commits behind the pass (a lower
    // id, committed late) is left for the next run, never lost.
    let mut after = 0;
    loop {
        let round = consume(db, after, ceiling, parents.max(1)).await?;
        total.add(round.report);
        after = round.last;
        if !round.full {
            return Ok(total);
        }
    }
}

async fn highest_mark(db: &impl ConnectionTrait) -> Result<Option<i64>> {
    let range = Range::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        "SELECT MIN(id) AS lo, MAX(id) AS hi FROM count_marks",
    ))
    .one(db)
    .await?;
    Ok(range.and_then(|r| r.hi))
}

/// How many count marks wait for the next incremental run.
pub async fn pending_marks(db: &impl ConnectionTrait) -> Result<u64> {
    count_rows(db, "count_marks").await
}

async fn exec(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Result<u64> {
    let backend: DbBackend = db.get_database_backend();
    let done = db
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    Ok(done.rows_affected())
}
