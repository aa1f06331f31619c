//! Reads and writes of the client-visible tables, the count marks that
//! writes leave for the recount, the scheduler's run records, and what the
//! dashboard reads: the audit trail, per-minute job figures and the worker
//! registry, the queues operators paused and the sessions they ended.
//!
//! Reads go through sea-orm's query builder. The bulk upserts are written
//! as SQL per backend, because their version guard (`only move a row
//! forward`) is spelled differently on MySQL and SQLite.
pub mod applications;
pub mod ceilings;
pub mod chats;
pub mod counts;
pub mod messages;
mod sizes;
mod upsert;

/// One page of a list ordered by number, and the cursor for the next.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<i64>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only says
    /// that another page exists.
    pub(crate) fn from_overfetch(mut rows: Vec<T>, limit: u64, number: impl Fn(&T) -> i64) -> Self {
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next_after = if more { rows.last().map(&number) } else { None };
        Page {
            items: rows,
            next_after,
        }
    }
}
