//! What each operator action does to one job: retry or discard a dead
//! job, run a retrying job now, cancel a pending or retrying one; which
//! states offer which, and how the pages word them.
//!
//! A retry revives the dead job in place: it keeps its payload, trace
//! context and failure history and runs through the normal pipeline, where
//! the version-guarded upsert makes a repeated row a no-op.
use chat_queue::{JobRecord, JobState, QueueName};
use chat_store::model::{ChatRow, MessageRow};

use crate::{Dashboard, error::DashError, job_page::job_key};

/// A job an action touched: the handle it had, the one it goes on with,
/// and the key that names it in every state.
pub(crate) struct Touched {
    pub was: String,
    pub now: String,
    pub key: String,
}

fn jobs(n: usize) -> String {
    match n {
        1 => "1 job".to_owned(),
        n => format!("{n} jobs"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Retry,
    Discard,
    RetryNow,
    Cancel,
}

impl Action {
    const ALL: [Action; 4] = [
        Action::Retry,
        Action::Discard,
        Action::RetryNow,
        Action::Cancel,
    ];

    /// In URLs, forms and the audit trail.
    pub(crate) fn slug(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Discard => "discard",
            Action::RetryNow => "retry_now",
            Action::Cancel => "cancel",
        }
    }

    pub(crate) fn named(name: &str) -> Result<Action, DashError> {
        Action::ALL
            .into_iter()
            .find(|a| a.slug() == name)
            .ok_or(DashError::NotFound("action"))
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Action::Retry => "Retry",
            Action::Discard => "Discard",
            Action::RetryNow => "Retry now",
            Action::Cancel => "Cancel",
        }
    }

    pub(crate) fn dangerous(self) -> bool {
        matches!(self, Action::Discard | Action::Cancel)
    }

    /// The actions a job in `state` offers.
    pub(crate) fn for_state(state: JobState) -> &'static [Action] {
        match state {
            JobState::Dead => &[Action::Retry, Action::Discard],
            JobState::Retrying => &[Action::RetryNow, Action::Cancel],
            JobState::Pending => &[Action::Cancel],
            JobState::InFlight | JobState::Done => &[],
        }
    }

    pub(crate) fn question(self, n: usize, q: QueueName, state: JobState) -> String {
        let jobs = jobs(n);
        let (q, s) = (q.as_str(), crate::jobs::state_label(state));
        match self {
            Action::Retry => format!("Put {jobs} ({s}) of {q} back in the queue?"),
            Action::Discard => format!("Delete {jobs} ({s}) of {q} for good?"),
            Action::RetryNow => {
                format!("Run {jobs} of {q} now instead of at the end of the backoff?")
            }
            Action::Cancel => format!(
                "Cancel {jobs} ({s}) of {q}? They are deleted unrun; a chat or message \
                 job's write will never reach the database."
            ),
        }
    }

    pub(crate) fn outcome(self, n: usize) -> String {
        let jobs = jobs(n);
        match self {
            Action::Retry => format!("{jobs} back in their queue."),
            Action::Discard => format!("{jobs} discarded."),
            Action::RetryNow => format!("{jobs} due now."),
            Action::Cancel => format!("{jobs} cancelled."),
        }
    }

    /// Acts on one job; `None` when it was not there to act on (it moved
    /// on, or another operator was first).
    pub(crate) async fn apply(
        self,
        d: &Dashboard,
        q: QueueName,
        state: JobState,
        id: &str,
    ) -> Result<Option<Touched>, DashError> {
        let queue = &d.deps.queue;
        let job: Option<JobRecord> = match state {
            JobState::Dead => queue.dead_job(q, id).await?.map(Into::into),
            s => queue.job(q, s, id).await?,
        };
        let Some(job) = job else { return Ok(None) };
        let now = match self {
            // Revived on Redis, the job goes on under a new handle.
            Action::Retry => queue.revive(q, id).await?,
            Action::RetryNow => queue.retry_now(q, id).await?.then(|| id.to_owned()),
            Action::Discard | Action::Cancel => {
                let done = match self {
                    Action::Discard => queue.discard(q, id).await?,
                    _ => queue.cancel(q, state, id).await?,
                };
                if done && q.holds_accepted_writes() {
                    forget_write(d, q, &job.payload).await?;
                }
                done.then(|| id.to_owned())
            }
        };
        Ok(now.map(|now| Touched {
            was: id.to_owned(),
            now,
            key: job_key(&job),
        }))
    }
}

/// Drops the read-your-writes entry of a write whose job was discarded or
/// cancelled (the write will never reach the database, so reads must stop
/// answering with it), unless a newer state of the row is pending.
async fn forget_write(d: &Dashboard, q: QueueName, payload: &str) -> Result<(), DashError> {
    let intake = &d.deps.intake;
    match q {
        QueueName::Chats => {
            if let Ok(row) = serde_json::from_str::<ChatRow>(payload) {
                intake.forget_chats(&[row]).await?;
            }
        }
        QueueName::Messages => {
            if let Ok(row) = serde_json::from_str::<MessageRow>(payload) {
                intake.forget_messages(&[row]).await?;
            }
        }
        QueueName::Index => {}
    }
    Ok(())
}
