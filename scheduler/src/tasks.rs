//! The periodic tasks and what one run of each does.
use chat_links::error::Result;
pub use chat_ops::runs::Task;
use chat_ops::{pulse, workers};
use chat_queue::QueueName;
use chat_search::maintenance;
use chat_store::repo::counts;
use serde_json::json;

use crate::{SchedulerConfig, SchedulerDeps};

/// Distinct parents per incremental round: a round reads marks until it
/// names this many, recounts each of them once however many marks named
/// it, then deletes what it read. A run goes on for as many rounds as the
/// marks that existed when it started need, so the table cannot outgrow
/// what one interval adds.
const PARENTS_PER_ROUND: u64 = 100_000;
/// Messages persisted this recently are still on their way through the
/// index queue: the drift check leaves them to their jobs.
const DRIFT_SETTLE: std::time::Duration = std::time::Duration::from_secs(60);
/// Parents per statement in a full recount.
const FULL_RECOUNT_BATCH: i64 = 1_000;
/// Minutes of job figures kept: the dashboard charts the last day.
const PULSE_KEEP_MINUTES: i64 = 25 * 60;
/// A worker silent this long died without stopping cleanly.
const WORKER_SILENT_MS: i64 = 10 * 60 * 1000;

/// What a run did, for its record.
pub struct Done {
    pub rows_touched: u64,
    pub detail: serde_json::Value,
}

/// Runs `task` once.
pub async fn run(task: Task, deps: &SchedulerDeps, config: &SchedulerConfig) -> Result<Done> {
    match task {
        Task::Counts => {
            let report = counts::recount_dirty(&deps.writer, PARENTS_PER_ROUND).await?;
            Ok(Done {
                rows_touched: report.repaired(),
                detail: serde_json::to_value(report)?,
            })
        }
        Task::CountsFull => {
            let report = counts::recount_all(&deps.writer, FULL_RECOUNT_BATCH).await?;
            Ok(Done {
                rows_touched: report.repaired(),
                detail: serde_json::to_value(report)?,
            })
        }
        Task::Housekeeping => {
            let mut detail = serde_json::Map::new();
            let mut touched = 0;
            for queue in QueueName::ALL {
                let trimmed = deps.queue.trim(queue, config.retention).await?;
                touched += trimmed.done + trimmed.dead;
                detail.insert(queue.as_str().into(), serde_json::to_value(trimmed)?);
            }
            let purged = deps.intake.purge_expired().await?;
            touched += purged;
            detail.insert("pending_purged".into(), purged.into());
            let keys = deps.idempotency.purge_expired().await?;
            touched += keys;
            detail.insert("idempotency_keys_purged".into(), keys.into());
            let figures =
                pulse::trim(&deps.writer, pulse::minute_now() - PULSE_KEEP_MINUTES).await?;
            detail.insert("figures_trimmed".into(), figures.into());
            let silent =
                workers::forget_silent(&deps.writer, chat_links::now_millis() - WORKER_SILENT_MS)
                    .await?;
            detail.insert("silent_workers_forgotten".into(), silent.into());
            Ok(Done {
                rows_touched: touched,
                detail: detail.into(),
            })
        }
        Task::SearchDrift => {
            let report =
                maintenance::check_drift(&deps.db, deps.search.as_ref(), true, DRIFT_SETTLE)
                    .await?;
            Ok(Done {
                rows_touched: report.resent + report.removed,
                detail: json!({
                    "chats_checked": report.chats_checked,
                    "drifted": report.drifted.len(),
                    "repaired": report.repaired,
                    "resent": report.resent,
                    "removed": report.removed,
                }),
            })
        }
    }
}
