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

use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};
use serde::Serialize;

use crate::error::Result;

/// Parents recounted per statement.
const PARENTS_PER_STATEMENT: usize = 500;

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
        let sql = format!(
            "INSERT INTO count_marks (application_id, chat_number) VALUES {}",
            vec!["(?, ?)"; chunk.len()].join(", ")
        );
        let values: Vec<Value> = chunk
            .iter()
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

/// Consumes up to `limit` marks with an id up to `ceiling` (all of them
/// with `None`): recounts the parents they name and deletes them. Returns
/// what it did; `marks < limit` means none were left below the ceiling.
pub async fn recount_marked(
    db: &impl ConnectionTrait,
    limit: u64,
    ceiling: Option<i64>,
) -> Result<RecountReport> {
    let backend = db.get_database_backend();
    let marks = Mark::find_by_statement(Statement::from_sql_and_values(
        backend,
        "SELECT id, application_id, chat_number FROM count_marks WHERE id <= ? \
         ORDER BY id LIMIT ?",
        [ceiling.unwrap_or(i64::MAX).into(), (limit as i64).into()],
    ))
    .all(db)
    .await?;
    if marks.is_empty() {
        return Ok(RecountReport::default());
    }
    let mut chats = BTreeSet::new();
    let mut applications = BTreeSet::new();
    for m in &marks {
        if m.chat_number == 0 {
            applications.insert(m.application_id);
        } else {
            chats.insert((m.application_id, m.chat_number));
        }
    }
    let mut report = RecountReport {
        marks: marks.len() as u64,
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
    let ids: Vec<i64> = marks.iter().map(|m| m.id).collect();
    for chunk in ids.chunks(PARENTS_PER_STATEMENT) {
        exec(
            db,
            &format!(
                "DELETE FROM count_marks WHERE id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            ),
            chunk.iter().map(|&id| id.into()).collect(),
        )
        .await?;
    }
    Ok(report)
}

/// Consumes every mark that existed when it was called, in batches of
/// `batch`.
pub async fn recount_dirty(db: &impl ConnectionTrait, batch: u64) -> Result<RecountReport> {
    let mut total = RecountReport::default();
    let Some(ceiling) = highest_mark(db).await? else {
        return Ok(total);
    };
    loop {
        let round = recount_marked(db, batch, Some(ceiling)).await?;
        total.add(round);
        if round.marks < batch {
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

/// Sets every `messages_count` and `chats_count` to what the tables hold,
/// walking both tables in id ranges of `batch` parents, and leaves the
/// marks alone (a concurrent incremental run still owns them).
pub async fn recount_all(db: &impl ConnectionTrait, batch: i64) -> Result<RecountReport> {
    let batch = batch.max(1);
    let mut report = RecountReport::default();
    for (table, is_chats) in [("chats", true), ("applications", false)] {
        let Some((lo, hi)) = id_range(db, table).await? else {
            continue;
        };
        let mut start = lo;
        while start <= hi {
            let filter = Filter {
                sql: "id >= ? AND id < ?".into(),
                values: vec![start.into(), (start + batch).into()],
            };
            if is_chats {
                report.chats_repaired += recount_chats(db, &filter).await?;
            } else {
                report.applications_repaired += recount_applications(db, &filter).await?;
            }
            start += batch;
        }
        let checked = count_rows(db, table).await?;
        if is_chats {
            report.chats_checked = checked;
        } else {
            report.applications_checked = checked;
        }
    }
    Ok(report)
}

struct Filter {
    sql: String,
    values: Vec<Value>,
}

/// `(application_id = ? AND number IN (…)) OR …`: one range per
/// application, which both MySQL and SQLite plan as index ranges.
fn chat_filter(chats: &[(i64, i64)]) -> Filter {
    let mut groups: Vec<(i64, Vec<i64>)> = Vec::new();
    for &(app, number) in chats {
        match groups.last_mut() {
            Some((a, numbers)) if *a == app => numbers.push(number),
            _ => groups.push((app, vec![number])),
        }
    }
    let mut values = Vec::with_capacity(chats.len() + groups.len());
    let clauses: Vec<String> = groups
        .into_iter()
        .map(|(app, numbers)| {
            let marks = vec!["?"; numbers.len()].join(", ");
            values.push(app.into());
            values.extend(numbers.into_iter().map(Value::from));
            format!("(application_id = ? AND number IN ({marks}))")
        })
        .collect();
    Filter {
        sql: format!("({})", clauses.join(" OR ")),
        values,
    }
}

const MESSAGES_OF_CHAT: &str = "(SELECT COUNT(*) FROM messages m \
     WHERE m.application_id = chats.application_id AND m.chat_number = chats.number)";

const CHATS_OF_APPLICATION: &str =
    "(SELECT COUNT(*) FROM chats c WHERE c.application_id = applications.id)";

/// Sets `column` of the `table` rows matching `filter` to `count`, where
/// it differs; returns how many counts were wrong (and are now right).
async fn recount(
    db: &impl ConnectionTrait,
    table: &str,
    column: &str,
    count: &str,
    filter: &Filter,
) -> Result<u64> {
    let sql = format!(
        "UPDATE {table} SET {column} = {count} WHERE {} AND {column} <> {count}",
        filter.sql
    );
    exec(db, &sql, filter.values.clone()).await
}

async fn recount_chats(db: &impl ConnectionTrait, filter: &Filter) -> Result<u64> {
    recount(db, "chats", "messages_count", MESSAGES_OF_CHAT, filter).await
}

async fn recount_applications(db: &impl ConnectionTrait, filter: &Filter) -> Result<u64> {
    recount(
        db,
        "applications",
        "chats_count",
        CHATS_OF_APPLICATION,
        filter,
    )
    .await
}

#[derive(FromQueryResult)]
struct Range {
    lo: Option<i64>,
    hi: Option<i64>,
}

async fn id_range(db: &impl ConnectionTrait, table: &str) -> Result<Option<(i64, i64)>> {
    let range = Range::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        format!("SELECT MIN(id) AS lo, MAX(id) AS hi FROM {table}"),
    ))
    .one(db)
    .await?;
    Ok(range.and_then(|r| Some((r.lo?, r.hi?))))
}

#[derive(FromQueryResult)]
struct Total {
    n: i64,
}

async fn count_rows(db: &impl ConnectionTrait, table: &str) -> Result<u64> {
    let total = Total::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        format!("SELECT COUNT(*) AS n FROM {table}"),
    ))
    .one(db)
    .await?;
    Ok(total.map_or(0, |t| t.n.max(0) as u64))
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
