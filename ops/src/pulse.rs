//! Per-minute job figures: how many jobs each queue finished and failed,
//! and histograms of their wait, run time and write lag. Workers add to
//! them; the dashboard reads the last hour, and the last day of throughput. Kept in the relational
//! database on both profiles, so every process sees the same figures and
//! reading them never touches the job history.
//!
//! A histogram is one field per bucket (`wait.7`), so adding a sample is an
//! increment, and many workers add to one minute without coordinating.
use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};

use chat_links::error::Result;

/// Upper bounds of the latency buckets, in ms; one more bucket holds
/// everything above the last.
pub const BOUNDS_MS: [u64; 18] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000,
    300_000, 600_000,
];
pub const BUCKETS: usize = BOUNDS_MS.len() + 1;

/// What a figure counts, as workers write it and the dashboard reads it.
/// A histogram's figures are one per bucket, named `<name>.<bucket>`
/// ([`Increments::sample`], read back by [`Field::parse`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// Jobs finished in the minute.
    Done,
    /// Failed attempts in the minute (a job that fails three times counts
    /// three).
    Failed,
    /// Histogram: from ready to claimed.
    Wait(usize),
    /// Histogram: from claimed to settled.
    Run(usize),
    /// Histogram, of a [`LagStage`] series: from the API's acceptance to
    /// the stage.
    Lag(usize),
}

impl Field {
    pub const DONE: &str = "done";
    pub const FAILED: &str = "failed";
    const WAIT: &str = "wait";
    const RUN: &str = "run";
    const LAG: &str = "lag";

    /// A stored figure's field; `None` for a name this build does not know
    /// or a bucket out of range.
    pub fn parse(stored: &str) -> Option<Field> {
        match stored.split_once('.') {
            None => match stored {
                Self::DONE => Some(Field::Done),
                Self::FAILED => Some(Field::Failed),
                _ => None,
            },
            Some((name, bucket)) => {
                let b = bucket.parse::<usize>().ok().filter(|&b| b < BUCKETS)?;
                match name {
                    Self::WAIT => Some(Field::Wait(b)),
                    Self::RUN => Some(Field::Run(b)),
                    Self::LAG => Some(Field::Lag(b)),
                    _ => None,
                }
            }
        }
    }
}

/// A histogram that [`Increments::sample`] adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Histogram {
    Wait,
    Run,
    Lag,
}

impl Histogram {
    fn name(self) -> &'static str {
        match self {
            Histogram::Wait => Field::WAIT,
            Histogram::Run => Field::RUN,
            Histogram::Lag => Field::LAG,
        }
    }
}

/// The write stages whose lag workers report, each a series of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LagStage {
    /// The row is committed to the database.
    Persisted,
    /// The row is searchable.
    Indexed,
}

impl LagStage {
    pub const ALL: [LagStage; 2] = [LagStage::Persisted, LagStage::Indexed];

    pub fn as_str(self) -> &'static str {
        match self {
            LagStage::Persisted => "persisted",
            LagStage::Indexed => "indexed",
        }
    }
}

/// Rows one upsert statement carries.
const CHUNK: usize = 200;

/// The bucket that counts a sample of `ms`.
pub fn bucket(ms: u64) -> usize {
    BOUNDS_MS.partition_point(|&bound| bound < ms)
}

/// A quantile read from bucket counts: the sample lies at or below a bound,
/// or above the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantile {
    AtMost(u64),
    Over(u64),
}

/// The bucket holding the `q`-quantile sample; `None` without samples.
pub fn quantile(counts: &[u64; BUCKETS], q: f64) -> Option<Quantile> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(match BOUNDS_MS.get(i) {
                Some(&bound) => Quantile::AtMost(bound),
                None => Quantile::Over(BOUNDS_MS[BOUNDS_MS.len() - 1]),
            });
        }
    }
    None
}

/// The current minute since the epoch.
pub fn minute_now() -> i64 {
    chat_links::now_millis().div_euclid(60_000)
}

/// Increments gathered in memory and written together.
#[derive(Debug, Default)]
pub struct Increments(HashMap<(String, i64, String), i64>);

impl Increments {
    pub fn add(&mut self, series: &str, minute: i64, field: &str, n: i64) {
        *self
            .0
            .entry((series.to_owned(), minute, field.to_owned()))
            .or_default() += n;
    }

    /// Adds one sample of `ms` to `histogram`.
    pub fn sample(&mut self, series: &str, minute: i64, histogram: Histogram, ms: u64) {
        self.add(
            series,
            minute,
            &format!("{}.{}", histogram.name(), bucket(ms)),
            1,
        );
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Adds `increments` to the stored figures.
pub async fn add(db: &impl ConnectionTrait, increments: &Increments) -> Result<()> {
    let backend = db.get_database_backend();
    let rows: Vec<_> = increments.0.iter().collect();
    for chunk in rows.chunks(CHUNK) {
        let marks = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
        let upsert = match backend {
            DbBackend::Sqlite => {
                "ON CONFLICT (series, minute, field) DO UPDATE SET n = n + excluded.n"
            }
            _ => "ON DUPLICATE KEY UPDATE n = n + VALUES(n)",
        };
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 4);
        for ((series, minute, field), n) in chunk {
            values.extend([
                series.clone().into(),
                (*minute).into(),
                field.clone().into(),
                (*n).into(),
            ]);
        }
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            format!("INSERT INTO job_pulse (series, minute, field, n) VALUES {marks} {upsert}"),
            values,
        ))
        .await?;
    }
    Ok(())
}

/// One stored figure.
#[derive(Clone, Debug, PartialEq, Eq, FromQueryResult)]
pub struct PulseRow {
    pub series: String,
    pub minute: i64,
    pub field: String,
    pub n: i64,
}

/// Every figure of the minutes from `since` on.
pub async fn since(db: &impl ConnectionTrait, since: i64) -> Result<Vec<PulseRow>> {
    Ok(PulseRow::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT series, minute, field, n FROM job_pulse WHERE minute >= ?",
        [since.into()],
    ))
    .all(db)
    .await?)
}

/// Only the jobs done and failed per minute since `since`: what a chart
/// over a longer window needs, without a day of histogram buckets.
pub async fn throughput_since(db: &impl ConnectionTrait, since: i64) -> Result<Vec<PulseRow>> {
    Ok(PulseRow::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT series, minute, field, n FROM job_pulse \
         WHERE minute >= ? AND field IN (?, ?)",
        [since.into(), Field::DONE.into(), Field::FAILED.into()],
    ))
    .all(db)
    .await?)
}

/// Removes the minutes before `before`; returns how many figures.
pub async fn trim(db: &impl ConnectionTrait, before: i64) -> Result<u64> {
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "DELETE FROM job_pulse WHERE minute < ?",
            [before.into()],
        ))
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_workers_write_the_dashboard_reads_back() {
        let mut g = Increments::default();
        g.add("messages", 1, Field::DONE, 2);
        g.add("messages", 1, Field::FAILED, 1);
        g.sample("messages", 1, Histogram::Wait, 7);
        g.sample("messages", 1, Histogram::Run, 2_000);
        g.sample(LagStage::Persisted.as_str(), 1, Histogram::Lag, 700_000);
        let mut read: Vec<Field> = g.0.keys().filter_map(|(_, _, f)| Field::parse(f)).collect();
        read.sort_by_key(|f| format!("{f:?}"));
        assert_eq!(
            read,
            [
                Field::Done,
                Field::Failed,
                Field::Lag(BUCKETS - 1),
                Field::Run(bucket(2_000)),
                Field::Wait(bucket(7)),
            ]
        );
        assert_eq!(Field::parse("wait.99"), None, "a bucket out of range");
        assert_eq!(Field::parse("unknown"), None);
    }

    #[test]
    fn a_sample_lands_in_the_first_bucket_whose_bound_holds_it() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 1);
        assert_eq!(bucket(3), 2);
        assert_eq!(bucket(600_000), BOUNDS_MS.len() - 1);
        assert_eq!(bucket(600_001), BOUNDS_MS.len());
    }

    #[test]
    fn quantiles_name_the_bucket_of_the_ranked_sample() {
        let mut counts = [0u64; BUCKETS];
        assert_eq!(quantile(&counts, 0.5), None);
        // 98 samples at <= 10 ms, 2 at <= 1 s.
        counts[bucket(10)] = 98;
        counts[bucket(1_000)] = 2;
        assert_eq!(quantile(&counts, 0.5), Some(Quantile::AtMost(10)));
        assert_eq!(quantile(&counts, 0.98), Some(Quantile::AtMost(10)));
        assert_eq!(quantile(&counts, 0.99), Some(Quantile::AtMost(1_000)));
        counts[BUCKETS - 1] = 1_000;
        assert_eq!(quantile(&counts, 0.99), Some(Quantile::Over(600_000)));
    }
}
