//! Keeping a run's record alive while its work goes on.
//!
//! The heartbeat and the work share one database pool, and on SQLite that
//! pool is a single writer connection. They must be polled side by side:
//! a heartbeat awaited *instead of* the work waits for a connection that
//! the parked work holds and cannot give back until it is polled again, so
//! every writer in the process stalls for the pool's acquire timeout.
use std::{convert::Infallible, future::Future, time::Duration};

use chat_ops::runs::{self, RunId};
use sea_orm::DatabaseConnection;

use crate::Task;

/// Runs `work` to its end, heartbeating `run` every `every` meanwhile.
pub(crate) async fn while_beating<T>(
    db: &DatabaseConnection,
    run: RunId,
    task: Task,
    every: Duration,
    work: impl Future<Output = T>,
) -> T {
    tokio::select! {
        out = work => out,
        never = beat(db, run, task, every) => match never {},
    }
}

async fn beat(db: &DatabaseConnection, run: RunId, task: Task, every: Duration) -> Infallible {
    let mut ticks = tokio::time::interval(every);
    // A beat that waited for the connection is not followed by a burst of
    // the ones it missed: one fresh timestamp says all they would.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and `begin` has just written the record.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(e) = runs::heartbeat(db, run).await {
            tracing::warn!(task = task.name(), error = %e, "heartbeat failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use chat_links::db;
    use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

    use super::*;

    async fn heartbeat_at(db: &DatabaseConnection) -> i64 {
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT heartbeat_at FROM scheduler_runs",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index(0).unwrap()
    }

    /// The embedded profile's writer is one connection. A run that holds
    /// it when a beat falls due must still finish, and the beat go through
    /// once the run lets go, rather than both waiting out the pool's 30 s
    /// acquire timeout.
    #[tokio::test]
    async fn a_run_holding_the_only_writer_connection_still_heartbeats() {
        let dir = std::env::temp_dir().join(format!("chat-beat-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let writer = db::connect_writer(&db::default_sqlite_url(&dir))
            .await
            .unwrap();
        db::migrate(&writer).await.unwrap();
        let run = runs::begin(&writer, Task::Counts.name(), 1, "test")
            .await
            .unwrap()
            .expect("the only replica wins its tick");
        let begun = heartbeat_at(&writer).await;

        let every = Duration::from_millis(300);
        let work = async {
            let txn = writer.begin().await.unwrap();
            // Across several due beats.
            tokio::time::sleep(every * 4).await;
            txn.commit().await.unwrap();
            // Then without the connection, long enough for a beat.
            tokio::time::sleep(every * 3).await;
            "done"
        };
        let started = Instant::now();
        let out = while_beating(&writer, run, Task::Counts, every, work).await;

        assert_eq!(out, "done");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the run and its beats waited on each other for {:?}",
            started.elapsed()
        );
        let beaten = heartbeat_at(&writer).await;
        assert!(
            beaten >= begun + (every * 4).as_millis() as i64,
            "no beat landed after the run let go of the writer: {begun} then {beaten}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
