//! What the dashboard reads and repairs in the SQLite table.
use std::time::Duration;

use async_trait::async_trait;
use sea_orm::{DbBackend, FromQueryResult, Statement};

use super::{rows::*, *};
use crate::{
    DeadJob, JobHistory, JobPage, JobRecord, JobSearch, JobState, QueueName, QueueStats, Retention,
    Trimmed,
};

#[async_trait]
impl JobHistory for SqliteQueue {
    /// The live states are counted over the `dead = 0` part of the index,
    /// which is the backlog; the settled states come from the counters the
    /// triggers of migration m0007 keep, so a long history costs nothing.
    async fn stats(&self, queue: QueueName) -> Result<QueueStats> {
        let now = chat_links::now_millis();
        let live = Live::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT \
               SUM(CASE WHEN run_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1) THEN 1 ELSE 0 END) AS ready, \
               SUM(CASE WHEN lease_until >= ?1 THEN 1 ELSE 0 END) AS in_flight, \
               SUM(CASE WHEN run_at > ?1 AND (lease_until IS NULL OR lease_until < ?1) THEN 1 ELSE 0 END) AS retrying \
             FROM queue_jobs WHERE queue = ?2 AND dead = 0",
            [now.into(), queue.as_str().into()],
        ))
        .one(&self.db)
        .await?;
        let settled = Settled::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT state, n FROM queue_counts WHERE queue = ?",
            [queue.as_str().into()],
        ))
        .all(&self.db)
        .await?;
        let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
        let settled_n = |state: i64| {
            settled
                .iter()
                .find(|s| s.state == state)
                .map_or(0, |s| s.n.max(0) as u64)
        };
        let live = live.unwrap_or(Live {
            ready: None,
            in_flight: None,
            retrying: None,
        });
        Ok(QueueStats {
            ready: n(live.ready),
            in_flight: n(live.in_flight),
            retrying: n(live.retrying),
            dead: settled_n(DEAD),
            done: settled_n(DONE),
        })
    }

    async fn trim(&self, queue: QueueName, retention: Retention) -> Result<Trimmed> {
        let now = chat_links::now_millis();
        let cutoff = |age: Duration| now - age.as_millis() as i64;
        let mut done = self
            .trim_settled(queue, DONE, cutoff(retention.done))
            .await?;
        done += self.trim_beyond_cap(queue).await?;
        if queue.holds_accepted_writes() {
            return Ok(Trimmed { done, dead: 0 });
        }
        let dead = self
            .trim_settled(queue, DEAD, cutoff(retention.dead))
            .await?;
        Ok(Trimmed { done, dead })
    }

    async fn dead_jobs(&self, queue: QueueName, limit: usize) -> Result<Vec<DeadJob>> {
        let rows = Row::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            concat!(
                "SELECT id, ",
                payload_column!(),
                ", attempt, errors, trace, run_at, enqueued_at FROM queue_jobs \
                 WHERE queue = ? AND dead = 1 ORDER BY id DESC LIMIT ?"
            ),
            [queue.as_str().into(), (limit as i64).into()],
        ))
        .all(&self.db)
        .await?;
        Ok(rows.into_iter().map(dead).collect())
    }

    async fn dead_job(&self, queue: QueueName, id: &str) -> Result<Option<DeadJob>> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let row = Row::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            concat!(
                "SELECT id, ",
                payload_column!(),
                ", attempt, errors, trace, run_at, enqueued_at FROM queue_jobs \
                 WHERE id = ? AND queue = ? AND dead = 1"
            ),
            [id.into(), queue.as_str().into()],
        ))
        .one(&self.db)
        .await?;
        Ok(row.map(dead))
    }

    async fn revive(&self, queue: QueueName, id: &str) -> Result<Option<String>> {
        let Ok(row) = id.parse::<i64>() else {
            return Ok(None);
        };
        let revived = self
            .exec(
                "UPDATE queue_jobs SET dead = 0, attempt = 1, run_at = ?, lease_owner = NULL, \
                 lease_until = NULL WHERE id = ? AND queue = ? AND dead = 1",
                vec![
                    chat_links::now_millis().into(),
                    row.into(),
                    queue.as_str().into(),
                ],
            )
            .await?;
        self.notify(queue);
        // The row keeps its id: the handle stays the same in every state.
        Ok((revived == 1).then(|| id.to_owned()))
    }

    async fn discard(&self, queue: QueueName, id: &str) -> Result<bool> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(false);
        };
        let deleted = self
            .exec(
                "DELETE FROM queue_jobs WHERE id = ? AND queue = ? AND dead = 1",
                vec![id.into(), queue.as_str().into()],
            )
            .await?;
        Ok(deleted == 1)
    }

    async fn retry_now(&self, queue: QueueName, id: &str) -> Result<bool> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(false);
        };
        let sql = format!(
            "UPDATE queue_jobs SET run_at = ?1 WHERE id = ?2 AND queue = ?3 AND {}",
            state_filter(JobState::Retrying)
        );
        let values = vec![
            chat_links::now_millis().into(),
            id.into(),
            queue.as_str().into(),
        ];
        let due = self.exec(&sql, values).await? == 1;
        if due {
            self.notify(queue);
        }
        Ok(due)
    }

    /// The state's filter in the statement itself: a row claimed since the
    /// operator saw it holds a lease, and no longer matches.
    async fn cancel(&self, queue: QueueName, state: JobState, id: &str) -> Result<bool> {
        if !matches!(state, JobState::Pending | JobState::Retrying) {
            return Ok(false);
        }
        let Ok(id) = id.parse::<i64>() else {
            return Ok(false);
        };
        let sql = format!(
            "DELETE FROM queue_jobs WHERE id = ?2 AND queue = ?3 AND {}",
            state_filter(state)
        );
        let values = vec![
            chat_links::now_millis().into(),
            id.into(),
            queue.as_str().into(),
        ];
        Ok(self.exec(&sql, values).await? == 1)
    }

    async fn jobs(
        &self,
        queue: QueueName,
        state: JobState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        let now = chat_links::now_millis();
        let (at, id) = parse_cursor(cursor);
        let rows = AnyRow::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!(
                "SELECT {ANY_COLUMNS} FROM queue_jobs WHERE queue = ?2 AND {} \
                 AND (run_at < ?3 OR (run_at = ?3 AND id < ?4)) \
                 ORDER BY run_at DESC, id DESC LIMIT ?5",
                state_filter(state)
            ),
            [
                now.into(),
                queue.as_str().into(),
                at.into(),
                id.into(),
                (limit as i64 + 1).into(),
            ],
        ))
        .all(&self.db)
        .await?;
        let more = rows.len() > limit;
        let jobs: Vec<JobRecord> = rows
            .into_iter()
            .take(limit)
            .map(|r| record(r, now, self.lease))
            .collect();
        let next = more
            .then(|| jobs.last().map(|j| format!("{}:{}", j.at, j.id)))
            .flatten();
        Ok(JobPage { jobs, next })
    }

    /// A row keeps its id through every state, so the job is found
    /// wherever it is now.
    async fn job(&self, queue: QueueName, _state: JobState, id: &str) -> Result<Option<JobRecord>> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let row = AnyRow::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!("SELECT {ANY_COLUMNS} FROM queue_jobs WHERE id = ? AND queue = ?"),
            [id.into(), queue.as_str().into()],
        ))
        .one(&self.db)
        .await?;
        Ok(row.map(|r| record(r, chat_links::now_millis(), self.lease)))
    }

    async fn search(
        &self,
        queue: QueueName,
        search: &JobSearch,
        scan: usize,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        // The job id is the primary key: no scan at all.
        if let Some(id) = &search.job_id {
            let job = self.job(queue, JobState::Pending, id).await?;
            return Ok(job
                .into_iter()
                .filter(|j| search.matches(queue, j))
                .collect());
        }
        crate::history::scan_newest(self, queue, search, scan, limit).await
    }

    fn system(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        self.db.ping().await?;
        Ok(())
    }
}
