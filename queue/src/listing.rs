//! Reading jobs for the dashboard: one state's jobs a page at a time,
//! newest first, one job by its handle, and searches. Every read is
//! bounded: a page by its size, a search by how many of the newest records
//! of each state it looks at.
use serde::Serialize;

use super::{DeadJob, Failure, QueueName};

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to be claimed.
    Pending,
    /// Claimed and not yet settled.
    InFlight,
    /// Failed, waiting for its backoff to pass.
    Retrying,
    Done,
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::InFlight,
        JobState::Retrying,
        JobState::Done,
        JobState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::InFlight => "in_flight",
            JobState::Retrying => "retrying",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A job as the dashboard lists and shows it, in any state.
#[derive(Clone, Debug, Serialize)]
pub struct JobRecord {
    /// The handle to read it again by, within its state.
    pub id: String,
    /// The id it had while live.
    pub job_id: String,
    pub state: JobState,
    /// In ms since the epoch: when it became claimable (pending, in
    /// flight), when it is due again (retrying), or when it settled.
    pub at: i64,
    /// As enqueued; a done record's may be cut (see `DONE_PAYLOAD_MAX`).
    pub payload: String,
    pub attempt: u32,
    pub failures: Vec<Failure>,
    pub trace: Option<String>,
    /// The consumer holding it (in flight), or that ran it last (done).
    pub worker: Option<String>,
    /// When it was first enqueued, in ms since the epoch, where known.
    pub enqueued_at: Option<i64>,
    /// When it last became claimable, where known.
    pub ready_at: Option<i64>,
    /// When its last delivery was claimed (in flight, done), where known.
    pub started_at: Option<i64>,
}

impl From<DeadJob> for JobRecord {
    fn from(d: DeadJob) -> Self {
        let worker = d.failures.last().and_then(|f| f.worker.clone());
        JobRecord {
            id: d.id,
            job_id: d.job_id,
            state: JobState::Dead,
            at: d.buried_at,
            payload: d.payload,
            attempt: d.attempt,
            failures: d.failures,
            worker,
            trace: d.trace,
            enqueued_at: d.enqueued_at,
            ready_at: None,
            started_at: None,
        }
    }
}

/// One page of a state's jobs, newest first, and the cursor of the next.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    pub next: Option<String>,
}

/// What a search looks for; every given part must match.
#[derive(Clone, Debug, Default)]
pub struct JobSearch {
    /// The id the job had while live (a retried or revived job's record
    /// keeps the id it had when it settled).
    pub job_id: Option<String>,
    /// The chat or message the job writes.
    pub names: Option<Resource>,
    /// Text one of its failures' errors must contain.
    pub error: Option<String>,
    /// A trace id (32 hex digits) its trace context must carry.
    pub trace: Option<String>,
}

/// An application's chat, or a message in it, by the numbers clients
/// know; the application by its internal id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    pub application_id: i64,
    pub chat: Option<i64>,
    pub message: Option<i64>,
}

impl Resource {
    /// Whether a job of `queue` with this payload writes the resource. The
    /// payload is a row's JSON, or a list of rows for an index job; field
    /// order varies (the Redis intake prepends the fields it decides), so
    /// it is parsed, after a cheap text check that rules most jobs out.
    pub fn named_by(&self, queue: QueueName, payload: &str) -> bool {
        if !payload.contains(&format!("\"application_id\":{}", self.application_id)) {
            return false;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(payload) else {
            return false;
        };
        let rows = match &value {
            serde_json::Value::Array(rows) => rows.iter().collect(),
            row => vec![row],
        };
        let is = |row: &serde_json::Value, field: &str, want: Option<i64>| {
            want.is_none_or(|n| row[field].as_i64() == Some(n))
        };
        rows.into_iter().any(|row| {
            is(row, "application_id", Some(self.application_id))
                && match queue {
                    QueueName::Chats => self.message.is_none() && is(row, "number", self.chat),
                    QueueName::Messages | QueueName::Index => {
                        is(row, "chat_number", self.chat) && is(row, "number", self.message)
                    }
                }
        })
    }
}

impl JobSearch {
    pub fn matches(&self, queue: QueueName, job: &JobRecord) -> bool {
        self.job_id.as_ref().is_none_or(|id| &job.job_id == id)
            && self
                .names
                .as_ref()
                .is_none_or(|r| r.named_by(queue, &job.payload))
            && self
                .error
                .as_ref()
                .is_none_or(|e| job.failures.iter().any(|f| contains_folded(&f.error, e)))
            && self
                .trace
                .as_ref()
                .is_none_or(|t| job.trace.as_ref().is_some_and(|c| c.contains(t.as_str())))
    }
}

/// Whether `text` contains `part`, ignoring case: an operator types an
/// error as they remember it, not as the backend capitalised it.
pub fn contains_folded(text: &str, part: &str) -> bool {
    text.to_lowercase().contains(&part.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_is_found_in_any_field_order_and_in_index_batches() {
        let message = r#"{"application_id":5,"chat_number":4,"number":17,"body":"hi"}"#;
        let reordered =
            r#"{"number":17,"version":3,"application_id":5,"chat_number":4,"body":"hi"}"#;
        let batch = format!("[{message},{}]", message.replace(":17", ":18"));
        let chat = r#"{"number":4,"version":1,"application_id":5,"name":null}"#;
        let r = |chat, message| Resource {
            application_id: 5,
            chat,
            message,
        };
        for payload in [message, reordered, batch.as_str()] {
            assert!(
                r(Some(4), Some(17)).named_by(QueueName::Messages, payload),
                "{payload}"
            );
            assert!(r(Some(4), None).named_by(QueueName::Messages, payload));
            assert!(r(None, None).named_by(QueueName::Messages, payload));
            assert!(!r(Some(4), Some(1)).named_by(QueueName::Messages, payload));
            assert!(!r(Some(40), None).named_by(QueueName::Messages, payload));
        }
        assert!(r(Some(4), Some(18)).named_by(QueueName::Index, &batch));
        let other_app = Resource {
            application_id: 55,
            chat: None,
            message: None,
        };
        assert!(!other_app.named_by(QueueName::Messages, message));
        assert!(r(Some(4), None).named_by(QueueName::Chats, chat));
        assert!(!r(Some(41), None).named_by(QueueName::Chats, chat));
        assert!(
            !r(Some(4), Some(1)).named_by(QueueName::Chats, chat),
            "chat jobs name no message"
        );
        assert!(
            !r(None, None).named_by(QueueName::Chats, "{\"application_id\":5,"),
            "cut payloads"
        );
    }
}
