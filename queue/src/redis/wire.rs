//! How a job is laid out in Redis: the stream entry's fields, the retry
//! set's member, and decoding both into the queue's types.
use redis::{Value, streams::StreamId};
use serde::{Deserialize, Serialize};

use crate::{Claimed, DeadJob, Failure, JobRecord, JobState};
use chat_links::error::{Result, StoreError};
use field::*;

/// The fields of a job's stream entry and of its done and dead records.
/// Every reader and writer of a job in Redis names them through these: the
/// decoders below, the settling calls, and the Lua that enqueues
/// ([`enqueue_lua`]) or records a done job (built from [`DONE_RECORD`]).
pub(super) mod field {
    pub const PAYLOAD: &str = "p";
    pub const ATTEMPT: &str = "a";
    pub const FAILURES: &str = "f";
    pub const TRACE: &str = "t";
    pub const ENQUEUED: &str = "e";
    pub const WORKER: &str = "w";
    pub const STARTED: &str = "s";
    pub const READY: &str = "r";
}

/// A done record's fields after its `id`, in the order `ack` sends them:
/// payload (cut), attempt, failures, trace, enqueued at, worker, started
/// (claimed) at, ready at.
pub(super) const DONE_RECORD: [&str; 8] = [
    PAYLOAD, ATTEMPT, FAILURES, TRACE, ENQUEUED, WORKER, STARTED, READY,
];

/// Lua locals naming a job entry's fields (`FP`, `FA`, `FF`, `FT`, `FE`),
/// prefixed to the scripts that copy entries, so they spell no letter.
pub(super) fn fields_lua() -> String {
    format!(
        "local FP, FA, FF, FT, FE = '{PAYLOAD}', '{ATTEMPT}', '{FAILURES}', '{TRACE}', '{ENQUEUED}'\n"
    )
}

/// A Lua list of field names, for the scripts that name them.
pub(super) fn lua_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("{{{}}}", quoted.join(", "))
}

/// Lua that defines `enqueue_job(stream, payload, trace)`, which appends a
/// first delivery exactly as [`decode_entry`] reads it (`trace` '' when
/// untraced), for a script that must enqueue in the same atomic step as
/// its other writes.
pub fn enqueue_lua() -> String {
    format!(
        r#"
local function enqueue_job(stream, payload, trace)
  if trace == '' then
    return redis.call('XADD', stream, '*', '{PAYLOAD}', payload)
  end
  return redis.call('XADD', stream, '*', '{PAYLOAD}', payload, '{TRACE}', trace)
end
"#
    )
}

#[derive(Serialize, Deserialize)]
pub(super) struct RetryMember<'a> {
    pub(super) p: &'a str,
    /// Kept as a string: cjson would print a number with a decimal point.
    pub(super) a: String,
    pub(super) f: String,
    /// Never null: cjson would decode a null as a truthy value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) t: Option<&'a str>,
    /// When the job was first enqueued, in ms, as a string like `a`.
    pub(super) e: String,
    /// Makes two identical payloads distinct members of the ZSET.
    pub(super) u: &'a str,
}

pub(super) fn field(entry: &StreamId, name: &str) -> Result<String> {
    match entry.map.get(name) {
        Some(Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
        Some(Value::SimpleString(s)) => Ok(s.clone()),
        _ => Err(StoreError::Other(format!(
            "stream entry {} lacks field {name}",
            entry.id
        ))),
    }
}

pub(super) fn optional_field(entry: &StreamId, name: &str) -> Option<String> {
    entry
        .map
        .contains_key(name)
        .then(|| field(entry, name).ok())
        .flatten()
}

/// The time part of a stream entry id (`<ms>-<seq>`): when it was added.
pub(super) fn entry_millis(id: &str) -> i64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// A first delivery carries `p` (and `t` when traced); a retried job also
/// carries its attempt (`a`), failure history (`f`) and first enqueue time
/// (`e`). `worker` is the consumer it is delivered to.
pub(super) fn decode_entry(entry: &StreamId, worker: &str) -> Result<Claimed> {
    let attempt = match entry.map.get(ATTEMPT) {
        Some(_) => field(entry, ATTEMPT)?.parse().unwrap_or(1),
        None => 1,
    };
    let failures = match entry.map.get(FAILURES) {
        Some(_) => serde_json::from_str(&field(entry, FAILURES)?).unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(Claimed {
        id: entry.id.clone(),
        payload: field(entry, PAYLOAD)?,
        attempt,
        failures,
        trace: optional_field(entry, TRACE),
        // Appended when enqueued, or when promoted from the retry set once
        // due: either way, when the job became claimable.
        ready_at: entry_millis(&entry.id),
        claimed_at: chat_links::now_millis(),
        enqueued_at: optional_field(entry, ENQUEUED)
            .and_then(|e| e.parse().ok())
            .unwrap_or_else(|| entry_millis(&entry.id)),
        worker: worker.to_owned(),
    })
}

/// An optional field holding a number.
pub(super) fn number_field(entry: &StreamId, name: &str) -> Option<i64> {
    optional_field(entry, name).and_then(|v| v.parse().ok())
}

/// A dead-stream entry: its own id is the handle, and the time it was
/// buried.
pub(super) fn decode_dead(e: &StreamId) -> Result<DeadJob> {
    Ok(DeadJob {
        id: e.id.clone(),
        job_id: field(e, "id")?,
        buried_at: entry_millis(&e.id),
        payload: field(e, PAYLOAD)?,
        attempt: field(e, ATTEMPT)?.parse().unwrap_or(0),
        failures: serde_json::from_str::<Vec<Failure>>(&field(e, FAILURES)?).unwrap_or_default(),
        trace: optional_field(e, TRACE),
        enqueued_at: number_field(e, ENQUEUED),
    })
}

/// A done-stream entry, or a dead one: its own id is the handle and the
/// time it settled; `id` holds the id the job had while live.
pub(super) fn decode_settled(e: &StreamId, state: JobState) -> Result<JobRecord> {
    let failures: Vec<Failure> = optional_field(e, FAILURES)
        .and_then(|f| serde_json::from_str(&f).ok())
        .unwrap_or_default();
    Ok(JobRecord {
        id: e.id.clone(),
        job_id: field(e, "id")?,
        state,
        at: entry_millis(&e.id),
        payload: field(e, PAYLOAD)?,
        attempt: field(e, ATTEMPT)?.parse().unwrap_or(0),
        failures: failures.clone(),
        trace: optional_field(e, TRACE),
        // A done record names its worker; a dead one's last failure does.
        worker: optional_field(e, WORKER)
            .or_else(|| failures.last().and_then(|f| f.worker.clone())),
        enqueued_at: number_field(e, ENQUEUED),
        ready_at: number_field(e, READY),
        started_at: number_field(e, STARTED),
    })
}

/// A live stream entry, pending or in flight; `holder` is the consumer
/// holding it and when it claimed it.
pub(super) fn decode_live(
    e: &StreamId,
    state: JobState,
    holder: Option<(String, i64)>,
) -> Result<JobRecord> {
    let job = decode_entry(e, "")?;
    let (worker, started_at) = holder.unzip();
    Ok(JobRecord {
        id: job.id.clone(),
        job_id: job.id,
        state,
        at: job.ready_at,
        payload: job.payload,
        attempt: job.attempt,
        failures: job.failures,
        trace: job.trace,
        worker,
        enqueued_at: Some(job.enqueued_at),
        ready_at: Some(job.ready_at),
        started_at,
    })
}

/// A retry-set member scored `due`; its handle is `due:id`, which finds
/// it again with one range read.
pub(super) fn decode_retrying(member: &str, due: i64) -> Result<JobRecord> {
    #[derive(Deserialize)]
    struct Member {
        p: String,
        a: String,
        f: String,
        t: Option<String>,
        e: Option<String>,
        u: String,
    }
    let m: Member = serde_json::from_str(member)?;
    Ok(JobRecord {
        id: format!("{due}:{}", m.u),
        job_id: m.u,
        state: JobState::Retrying,
        at: due,
        payload: m.p,
        attempt: m.a.parse().unwrap_or(1),
        failures: serde_json::from_str(&m.f).unwrap_or_default(),
        worker: None,
        trace: m.t,
        enqueued_at: m.e.and_then(|e| e.parse().ok()),
        ready_at: Some(due),
        started_at: None,
    })
}

/// The due time and job id a retrying handle (`due:id`) names.
pub(super) fn retry_handle(id: &str) -> Option<(i64, &str)> {
    let (due, job_id) = id.split_once(':')?;
    Some((due.parse().ok()?, job_id))
}

/// Whether `id` is a whole stream entry id (`<ms>-<seq>`): Redis reads a
/// bare `<ms>` as a range, and rejects other text with an error.
pub(super) fn is_entry_id(id: &str) -> bool {
    let number = |s: &str| s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok();
    id.split_once('-')
        .is_some_and(|(ms, seq)| number(ms) && number(seq))
}

/// A stream id as a comparable pair; `(0, 0)` when malformed.
pub(super) fn id_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub(super) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether the consumer group was missing (`NOGROUP`), from one command
/// or from any command of a pipeline, whose error names no code itself.
pub(super) fn is_missing_group(e: &StoreError) -> bool {
    let StoreError::Redis(r) = e else {
        return false;
    };
    r.code() == Some("NOGROUP")
        || (r.clone().into_server_errors())
            .is_some_and(|errors| errors.iter().any(|(_, e)| e.code() == "NOGROUP"))
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn a_cut_payload_ends_on_a_character_boundary() {
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("abc", 2), "ab");
        // "é" is two bytes: a cut through it backs off before it.
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aé", 3), "aé");
    }
}
