//! The job queue on Redis Streams.
//!
//! Keys, all sharing the queue's hash tag so every script runs in one slot:
//! - `<prefix>{q:<name>}:stream`: entries `p` (payload), `a` (attempt),
//!   `f` (failures, JSON), `t` (the sender's `traceparent`, when traced);
//!   consumer group `workers`;
//! - `<prefix>{q:<name>}:retry`: ZSET of failed jobs scored by due time;
//! - `<prefix>{q:<name>}:dead`: buried jobs, capped by `MAXLEN ~`;
//! - `<prefix>{q:<name>}:done`: a copy of each acked job (payload cut to
//!   [`DONE_PAYLOAD_MAX`] bytes), capped by `MAXLEN ~`.
//!
//! Acked entries are deleted from the stream, so its length is the live
//! backlog and memory does not grow with history. The done and dead
//! streams are history: their entry ids are the times the jobs settled,
//! so [`JobQueue::trim`] drops what is older than the retention with one
//! `XTRIM MINID` each, and the number of keys per queue stays four. Reads are bounded by
//! `COUNT`, and retries are promoted in bounded chunks, so no call ever
//! unpacks an unbounded list (the apalis-redis 1.0.0 backlog poison).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use redis::{
    AsyncCommands, Client, Script, Value,
    aio::{ConnectionManager, MultiplexedConnection},
    streams::{StreamAutoClaimReply, StreamId, StreamReadReply},
};
use serde::{Deserialize, Serialize};

use super::{
    Claimed, DeadJob, Failure, JobPage, JobQueue, JobRecord, JobState, QueueName, QueueStats,
    Retention, Trimmed,
};
use crate::{
    error::{Result, StoreError},
    redis_link,
};

const GROUP: &str = "workers";
/// How many due retries one promotion call moves back to the stream.
const PROMOTE_CHUNK: usize = 256;
/// Bytes of payload a done record keeps: enough for a message job, while a
/// large index batch cannot make the history's memory balloon.
pub const DONE_PAYLOAD_MAX: usize = 4096;

/// Settles jobs as done: ack, record, and delete, in one step, so a crash
/// cannot leave an acked entry behind in the stream. ARGV holds nine
/// values per job: its id, then the record's fields in [`DONE_FIELDS`]
/// order, each "" when absent.
/// Only a job this call acked is recorded, so a double ack, a late ack
/// after a takeover or an unknown id leaves no second record. The caller
/// sends the payload it already holds: reading it back with XRANGE here
/// doubled the script's cost per job. `MAXLEN ~` bounds the done stream
/// between housekeeping runs.
const ACK: &str = r#"
local names = {'p', 'a', 'f', 't', 'e', 'w', 's', 'r'}
local cap = tonumber(ARGV[2])
local ids = {}
for i = 3, #ARGV, 9 do
  local id = ARGV[i]
  ids[#ids + 1] = id
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 and cap > 0 then
    local fields = {'id', id}
    for k, name in ipairs(names) do
      if ARGV[i + k] ~= '' then
        fields[#fields + 1] = name
        fields[#fields + 1] = ARGV[i + k]
      end
    end
    redis.call('XADD', KEYS[2], '*', unpack(fields))
  end
end
if cap > 0 then
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', cap)
end
redis.call('XDEL', KEYS[1], unpack(ids))
return #ids
"#;

/// The fields of a done record after its `id`: payload (cut), attempt,
/// failures, trace, enqueued at, worker, started (claimed) at, ready at.
const DONE_FIELDS: usize = 8;

/// Moves jobs to the retry set, each atomically with its ack, so a job is
/// never both pending and scheduled. ARGV: group, then per job its id, due
/// time and retry-set member. Only a job this consumer group still holds
/// is moved: one settled meanwhile (taken over and acked) stays settled.
const LATER: &str = r#"
local n = 0
for i = 2, #ARGV, 3 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i + 2])
    n = n + 1
  end
end
return n
"#;

/// Moves a job to the dead stream with its history. ARGV: group, id, then
/// the record's fields as name, value pairs; empty values are left out.
/// Uncapped: a dead job may hold an accepted write, and only an operator
/// may drop one (`trim` applies the retention where none is held).
const BURY: &str = r#"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
local fields = {'id', ARGV[2]}
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] ~= '' then
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  end
end
redis.call('XADD', KEYS[2], '*', unpack(fields))
return 1
"#;

/// Resets the idle time of the entries ARGV[3..] that consumer ARGV[2]
/// still owns in group ARGV[1], so they are not taken over; `JUSTID`
/// leaves their delivery count alone. Entries owned by another consumer
/// (taken over already) or settled are skipped.
const RENEW: &str = r#"
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"#;

/// Re-appends unsettled entries as fresh ones (same payload, attempt and
/// failures) and settles the originals: a clean hand-back, which does not
/// count as a delivery the way a takeover does.
const HANDBACK: &str = r#"
local n = 0
for i = 2, #ARGV do
  local entry = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])[1]
  if entry then
    redis.call('XADD', KEYS[1], '*', unpack(entry[2]))
    n = n + 1
  end
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return n
"#;

/// Moves dead entry ARGV[1] back to the stream with attempt 1, keeping
/// its payload, failures, trace and enqueue time; 0 when there is no such
/// entry.
const REVIVE: &str = r#"
local entry = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])[1]
if not entry then return false end
local f = {}
for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
local fields = {'p', f['p'], 'a', '1', 'f', f['f'] or '[]'}
for _, name in ipairs({'t', 'e'}) do
  if f[name] then
    fields[#fields + 1] = name
    fields[#fields + 1] = f[name]
  end
end
local revived = redis.call('XADD', KEYS[1], '*', unpack(fields))
redis.call('XDEL', KEYS[2], ARGV[1])
return revived
"#;

/// `append(stream, job)` adds a decoded retry-set member to the stream as
/// the entry it becomes: payload, attempt, failures, trace and enqueue
/// time. Prefixed to every script that puts a retry back, so a job made due
/// early is exactly the job promotion would have made.
const APPEND_RETRY: &str = r#"
local function append(stream, job)
  local fields = {'p', job.p, 'a', job.a, 'f', job.f}
  for _, name in ipairs({'t', 'e'}) do
    if job[name] then
      fields[#fields + 1] = name
      fields[#fields + 1] = job[name]
    end
  end
  redis.call('XADD', stream, '*', unpack(fields))
end
"#;

/// Moves at most ARGV[2] due retries back to the stream.
const PROMOTE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  append(KEYS[1], cjson.decode(member))
  redis.call('ZREM', KEYS[2], member)
end
return #due
"#;

/// Takes the retry-set member a retrying handle names (ARGV[1] its due
/// time, ARGV[2] its `u`) out of the set, and with ARGV[3] = 'now' appends
/// it to the stream; 0 when it is no longer there (promoted, or taken).
/// The member and the entry change in one step, so the job is never both
/// or neither.
const TAKE_RETRY: &str = r#"
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], ARGV[1], ARGV[1], 'BYSCORE')) do
  local job = cjson.decode(member)
  if job.u == ARGV[2] then
    if ARGV[3] == 'now' then append(KEYS[1], job) end
    redis.call('ZREM', KEYS[2], member)
    return 1
  end
end
return 0
"#;

/// Deletes stream entry ARGV[2] if group ARGV[1] never delivered it; 0
/// otherwise. Every delivery, and so every in-flight entry, lies at or
/// below the group's last-delivered id (an entry leaves the stream when it
/// settles), which is also where the listings draw the pending line.
const CANCEL_PENDING: &str = r#"
if not redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])[1] then return 0 end
local last = '0-0'
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  if info['name'] == ARGV[1] then last = info['last-delivered-id'] end
end
local function order(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local ms, seq = order(ARGV[2])
local last_ms, last_seq = order(last)
if ms < last_ms or (ms == last_ms and seq <= last_seq) then return 0 end
return redis.call('XDEL', KEYS[1], ARGV[2])
"#;

#[derive(Serialize, Deserialize)]
struct RetryMember<'a> {
    p: &'a str,
    /// Kept as a string: cjson would print a number with a decimal point.
    a: String,
    f: String,
    /// Never null: cjson would decode a null as a truthy value.
    #[serde(skip_serializing_if = "Option::is_none")]
    t: Option<&'a str>,
    /// When the job was first enqueued, in ms, as a string like `a`.
    e: String,
    /// Makes two identical payloads distinct members of the ZSET.
    u: &'a str,
}

pub struct RedisStreamQueue {
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    claim_idle: Duration,
    done_cap: usize,
    /// Consumers that own nothing and have been idle this long are removed
    /// from the group, so names from past processes do not pile up.
    prune_idle: Duration,
    last_prune: Mutex<HashMap<QueueName, Instant>>,
    scripts: Scripts,
    /// One connection per consumer: a blocking XREADGROUP holds its
    /// connection, and sharing it would stall every other command.
    readers: Mutex<HashMap<String, MultiplexedConnection>>,
    last_sweep: Mutex<HashMap<(QueueName, String), Instant>>,
    groups: Mutex<HashMap<QueueName, bool>>,
}

struct Scripts {
    ack: Script,
    handback: Script,
    later: Script,
    renew: Script,
    bury: Script,
    promote: Script,
    revive: Script,
    take_retry: Script,
    cancel_pending: Script,
}

impl RedisStreamQueue {
    pub async fn connect(url: &str, prefix: &str, claim_idle: Duration) -> Result<Arc<Self>> {
        let client = redis_link::client(url)?;
        let conn = redis_link::manager(&client).await?;
        Ok(Arc::new(Self {
            client,
            conn,
            prefix: prefix.to_owned(),
            claim_idle,
            done_cap: 10_000,
            prune_idle: Duration::from_secs(600),
            last_prune: Mutex::new(HashMap::new()),
            scripts: Scripts {
                ack: Script::new(ACK),
                handback: Script::new(HANDBACK),
                later: Script::new(LATER),
                renew: Script::new(RENEW),
                bury: Script::new(BURY),
                promote: Script::new(&format!("{APPEND_RETRY}{PROMOTE}")),
                revive: Script::new(REVIVE),
                take_retry: Script::new(&format!("{APPEND_RETRY}{TAKE_RETRY}")),
                cancel_pending: Script::new(CANCEL_PENDING),
            },
            readers: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
        }))
    }

    /// Caps the done stream at about `cap` entries (default 10,000); 0
    /// keeps no done records.
    pub fn with_done_cap(mut self: Arc<Self>, cap: usize) -> Arc<Self> {
        Arc::get_mut(&mut self)
            .expect("set the cap before sharing")
            .done_cap = cap;
        self
    }

    /// Sets how long an empty consumer may stay idle before it is pruned.
    pub fn with_prune_idle(mut self: Arc<Self>, idle: Duration) -> Arc<Self> {
        Arc::get_mut(&mut self)
            .expect("set before sharing")
            .prune_idle = idle;
        self
    }

    fn key(&self, q: QueueName, part: &str) -> String {
        format!("{}{{q:{}}}:{part}", self.prefix, q.as_str())
    }

    pub fn stream_key(&self, q: QueueName) -> String {
        self.key(q, "stream")
    }

    async fn ensure_group(&self, q: QueueName) -> Result<()> {
        if self
            .groups
            .lock()
            .unwrap()
            .get(&q)
            .copied()
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.stream_key(q))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        self.groups.lock().unwrap().insert(q, true);
        Ok(())
    }

    async fn reader(&self, consumer: &str, wait: Duration) -> Result<MultiplexedConnection> {
        if let Some(c) = self.readers.lock().unwrap().get(consumer) {
            return Ok(c.clone());
        }
        let conn = redis_link::dedicated(&self.client, wait).await?;
        self.readers
            .lock()
            .unwrap()
            .insert(consumer.to_owned(), conn.clone());
        Ok(conn)
    }

    /// Whether this consumer should look for expired claims and due retries
    /// now. Rate-limited so an idle pool does not scan on every read.
    fn sweep_due(&self, q: QueueName, consumer: &str) -> bool {
        let every = (self.claim_idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut last = self.last_sweep.lock().unwrap();
        let key = (q, consumer.to_owned());
        match last.get(&key) {
            Some(t) if t.elapsed() < every => false,
            _ => {
                last.insert(key, Instant::now());
                true
            }
        }
    }

    /// Removes consumers that own no pending entries and have been idle for
    /// `prune_idle`: each worker start registers a new name, and without
    /// this the group would list every process that ever ran. Runs at most
    /// once a minute per queue and process. A live consumer removed here is
    /// re-created by its next read, having owned nothing.
    async fn prune_consumers(&self, q: QueueName) -> Result<()> {
        {
            let mut last = self.last_prune.lock().unwrap();
            let every = self.prune_idle.min(Duration::from_secs(60));
            if last.get(&q).is_some_and(|t| t.elapsed() < every) {
                return Ok(());
            }
            last.insert(q, Instant::now());
        }
        let mut conn = self.conn.clone();
        let consumers: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(self.stream_key(q))
            .arg(GROUP)
            .query_async(&mut conn)
            .await?;
        let int = |c: &HashMap<String, Value>, k: &str| match c.get(k) {
            Some(Value::Int(n)) => *n,
            _ => -1,
        };
        for c in consumers {
            let idle = int(&c, "idle");
            if int(&c, "pending") != 0 || idle < 0 || (idle as u128) < self.prune_idle.as_millis() {
                continue;
            }
            let Some(Value::BulkString(name)) = c.get("name") else {
                continue;
            };
            let _: i64 = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(self.stream_key(q))
                .arg(GROUP)
                .arg(name.as_slice())
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    async fn promote_due(&self, q: QueueName) -> Result<()> {
        let mut conn = self.conn.clone();
        loop {
            let moved: usize = self
                .scripts
                .promote
                .key(self.stream_key(q))
                .key(self.key(q, "retry"))
                .arg(crate::now_millis())
                .arg(PROMOTE_CHUNK)
                .invoke_async(&mut conn)
                .await?;
            if moved < PROMOTE_CHUNK {
                return Ok(());
            }
        }
    }

    /// Moves each job to the retry set, due after `delay`, as the member
    /// it becomes: its payload, the attempt it will run as, and its
    /// failures.
    async fn later(
        &self,
        queue: QueueName,
        jobs: &[(&Claimed, u32, String)],
        delay: Duration,
    ) -> Result<()> {
        let due = crate::now_millis() + delay.as_millis() as i64;
        let mut call = self.scripts.later.key(self.stream_key(queue));
        call.key(self.key(queue, "retry")).arg(GROUP);
        for (job, attempt, failures) in jobs {
            let member = serde_json::to_string(&RetryMember {
                p: &job.payload,
                a: attempt.to_string(),
                f: failures.clone(),
                t: job.trace.as_deref(),
                e: job.enqueued_at.to_string(),
                u: &job.id,
            })?;
            call.arg(&job.id).arg(due).arg(member);
        }
        let mut conn = self.conn.clone();
        let _: i64 = call.invoke_async(&mut conn).await?;
        Ok(())
    }

    /// Takes the retrying job `id` names out of the retry set, appending it
    /// to the stream when `now`; `false` when it waits there no longer.
    async fn take_retry(&self, queue: QueueName, id: &str, now: bool) -> Result<bool> {
        let Some((due, job_id)) = retry_handle(id) else {
            return Ok(false);
        };
        let mut conn = self.conn.clone();
        let taken: i64 = self
            .scripts
            .take_retry
            .key(self.stream_key(queue))
            .key(self.key(queue, "retry"))
            .arg(due)
            .arg(job_id)
            .arg(if now { "now" } else { "" })
            .invoke_async(&mut conn)
            .await?;
        Ok(taken == 1)
    }

    async fn take_over_expired(
        &self,
        q: QueueName,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Claimed>> {
        let mut conn = self.conn.clone();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(self.stream_key(q))
            .arg(GROUP)
            .arg(consumer)
            .arg(self.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await?;
        if reply.claimed.is_empty() {
            return Ok(Vec::new());
        }
        tracing::warn!(
            queue = q.as_str(),
            consumer,
            jobs = reply.claimed.len(),
            "took over jobs whose consumer stopped settling them"
        );
        // Each delivery that ended without a settle (its worker died while
        // holding the job) counts as an attempt, so a job that kills its
        // worker every time still runs out of attempts.
        let mut pipe = redis::pipe();
        for entry in &reply.claimed {
            pipe.cmd("XPENDING")
                .arg(self.stream_key(q))
                .arg(GROUP)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1);
        }
        let pending: Vec<Vec<(String, String, u64, u64)>> = pipe.query_async(&mut conn).await?;
        reply
            .claimed
            .iter()
            .zip(pending)
            .map(|(entry, info)| {
                let mut job = decode_entry(entry, consumer)?;
                let delivered = info.first().map(|p| p.3).unwrap_or(1).max(1) as u32;
                job.attempt += delivered - 1;
                Ok(job)
            })
            .collect()
    }

    async fn read_new(
        &self,
        q: QueueName,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>> {
        let mut conn = self.reader(consumer, wait).await?;
        let reply: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(self.stream_key(q))
            .arg(">")
            .query_async(&mut conn)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                // This connection is dedicated and never reconnects by
                // itself: after any failure, the next read opens a new one.
                self.readers.lock().unwrap().remove(consumer);
                return Err(e.into());
            }
        };
        let Some(reply) = reply else {
            return Ok(Vec::new());
        };
        reply
            .keys
            .iter()
            .flat_map(|k| k.ids.iter())
            .map(|e| decode_entry(e, consumer))
            .collect()
    }
}

fn field(entry: &StreamId, name: &str) -> Result<String> {
    match entry.map.get(name) {
        Some(Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
        Some(Value::SimpleString(s)) => Ok(s.clone()),
        _ => Err(StoreError::Other(format!(
            "stream entry {} lacks field {name}",
            entry.id
        ))),
    }
}

fn optional_field(entry: &StreamId, name: &str) -> Option<String> {
    entry
        .map
        .contains_key(name)
        .then(|| field(entry, name).ok())
        .flatten()
}

/// The time part of a stream entry id (`<ms>-<seq>`): when it was added.
fn entry_millis(id: &str) -> i64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// A first delivery carries `p` (and `t` when traced); a retried job also
/// carries its attempt (`a`), failure history (`f`) and first enqueue time
/// (`e`). `worker` is the consumer it is delivered to.
fn decode_entry(entry: &StreamId, worker: &str) -> Result<Claimed> {
    let attempt = match entry.map.get("a") {
        Some(_) => field(entry, "a")?.parse().unwrap_or(1),
        None => 1,
    };
    let failures = match entry.map.get("f") {
        Some(_) => serde_json::from_str(&field(entry, "f")?).unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(Claimed {
        id: entry.id.clone(),
        payload: field(entry, "p")?,
        attempt,
        failures,
        trace: optional_field(entry, "t"),
        // Appended when enqueued, or when promoted from the retry set once
        // due: either way, when the job became claimable.
        ready_at: entry_millis(&entry.id),
        claimed_at: crate::now_millis(),
        enqueued_at: optional_field(entry, "e")
            .and_then(|e| e.parse().ok())
            .unwrap_or_else(|| entry_millis(&entry.id)),
        worker: worker.to_owned(),
    })
}

/// An optional field holding a number.
fn number_field(entry: &StreamId, name: &str) -> Option<i64> {
    optional_field(entry, name).and_then(|v| v.parse().ok())
}

/// A dead-stream entry: its own id is the handle, and the time it was
/// buried.
fn decode_dead(e: &StreamId) -> Result<DeadJob> {
    Ok(DeadJob {
        id: e.id.clone(),
        job_id: field(e, "id")?,
        buried_at: entry_millis(&e.id),
        payload: field(e, "p")?,
        attempt: field(e, "a")?.parse().unwrap_or(0),
        failures: serde_json::from_str::<Vec<Failure>>(&field(e, "f")?).unwrap_or_default(),
        trace: optional_field(e, "t"),
        enqueued_at: number_field(e, "e"),
    })
}

/// A done-stream entry, or a dead one: its own id is the handle and the
/// time it settled; `id` holds the id the job had while live.
fn decode_settled(e: &StreamId, state: JobState) -> Result<JobRecord> {
    let failures: Vec<Failure> = optional_field(e, "f")
        .and_then(|f| serde_json::from_str(&f).ok())
        .unwrap_or_default();
    Ok(JobRecord {
        id: e.id.clone(),
        job_id: field(e, "id")?,
        state,
        at: entry_millis(&e.id),
        payload: field(e, "p")?,
        attempt: field(e, "a")?.parse().unwrap_or(0),
        failures: failures.clone(),
        trace: optional_field(e, "t"),
        // A done record names its worker; a dead one's last failure does.
        worker: optional_field(e, "w").or_else(|| failures.last().and_then(|f| f.worker.clone())),
        enqueued_at: number_field(e, "e"),
        ready_at: number_field(e, "r"),
        started_at: number_field(e, "s"),
    })
}

/// A live stream entry, pending or in flight; `holder` is the consumer
/// holding it and when it claimed it.
fn decode_live(e: &StreamId, state: JobState, holder: Option<(String, i64)>) -> Result<JobRecord> {
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
fn decode_retrying(member: &str, due: i64) -> Result<JobRecord> {
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
fn retry_handle(id: &str) -> Option<(i64, &str)> {
    let (due, job_id) = id.split_once(':')?;
    Some((due.parse().ok()?, job_id))
}

/// Whether `id` is a whole stream entry id (`<ms>-<seq>`): Redis reads a
/// bare `<ms>` as a range, and rejects other text with an error.
fn is_entry_id(id: &str) -> bool {
    let number = |s: &str| s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok();
    id.split_once('-')
        .is_some_and(|(ms, seq)| number(ms) && number(seq))
}

/// A stream id as a comparable pair; `(0, 0)` when malformed.
fn id_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn is_missing_group(e: &StoreError) -> bool {
    matches!(e, StoreError::Redis(r) if r.code() == Some("NOGROUP"))
}

impl RedisStreamQueue {
    /// The history stream of a settled state.
    fn settled_key(&self, q: QueueName, state: JobState) -> String {
        self.key(
            q,
            if state == JobState::Done {
                "done"
            } else {
                "dead"
            },
        )
    }

    /// The id of the newest entry handed to any consumer: entries after it
    /// were never delivered (pending), and the ones up to it still in the
    /// stream are unsettled (in flight), since a settle deletes its entry.
    async fn last_delivered(&self, q: QueueName) -> Result<String> {
        let mut conn = self.conn.clone();
        let groups: redis::RedisResult<Vec<HashMap<String, Value>>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(self.stream_key(q))
            .query_async(&mut conn)
            .await;
        let groups = match groups {
            Ok(groups) => groups,
            // No stream yet: nothing was ever delivered.
            Err(e) if e.code() == Some("ERR") => return Ok("0-0".into()),
            Err(e) => return Err(e.into()),
        };
        let text = |v: Option<&Value>| match v {
            Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Some(Value::SimpleString(s)) => Some(s.clone()),
            _ => None,
        };
        Ok(groups
            .iter()
            .find(|g| text(g.get("name")).as_deref() == Some(GROUP))
            .and_then(|g| text(g.get("last-delivered-id")))
            .unwrap_or_else(|| "0-0".into()))
    }

    /// Up to `count` entries of `key`, newest first, from `end` down to
    /// `start` (both in XREVRANGE syntax).
    async fn newest(
        &self,
        key: String,
        end: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<StreamId>> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply =
            conn.xrevrange_count(key, end, start, count).await?;
        Ok(reply.ids)
    }

    /// The consumer holding each in-flight entry and when it claimed it
    /// (now less the entry's idle time), in one round trip.
    async fn holders(&self, q: QueueName, ids: &[&str]) -> Result<Vec<Option<(String, i64)>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XPENDING")
                .arg(self.stream_key(q))
                .arg(GROUP)
                .arg(*id)
                .arg(*id)
                .arg(1);
        }
        let mut conn = self.conn.clone();
        let pending: Vec<Vec<(String, String, u64, u64)>> = pipe.query_async(&mut conn).await?;
        let now = crate::now_millis();
        Ok(pending
            .into_iter()
            .map(|p| {
                p.into_iter()
                    .next()
                    .map(|(_, consumer, idle, _)| (consumer, now - idle as i64))
            })
            .collect())
    }

    async fn retrying_page(
        &self,
        q: QueueName,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        // The cursor is the last due time shown and how many members with
        // exactly that due time were shown, so ties are neither skipped nor
        // repeated.
        let (max, skip) = cursor
            .and_then(|c| c.split_once(':'))
            .and_then(|(due, skip)| Some((due.parse::<i64>().ok()?, skip.parse::<usize>().ok()?)))
            .map_or(("+inf".to_owned(), 0), |(due, skip)| {
                (due.to_string(), skip)
            });
        let mut conn = self.conn.clone();
        let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.key(q, "retry"))
            .arg(&max)
            .arg("-inf")
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(skip)
            .arg(limit + 1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let more = members.len() > limit;
        let jobs = members
            .iter()
            .take(limit)
            .map(|(m, due)| decode_retrying(m, *due as i64))
            .collect::<Result<Vec<_>>>()?;
        let next = match (more, jobs.last()) {
            (true, Some(last)) => {
                let same = jobs.iter().filter(|j| j.at == last.at).count();
                let carried = if max == last.at.to_string() { skip } else { 0 };
                Some(format!("{}:{}", last.at, same + carried))
            }
            _ => None,
        };
        Ok(JobPage { jobs, next })
    }
}

#[async_trait]
impl JobQueue for RedisStreamQueue {
    async fn enqueue_traced(
        &self,
        queue: QueueName,
        payload: String,
        trace: Option<String>,
    ) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut fields = vec![("p", payload.as_str())];
        if let Some(trace) = &trace {
            fields.push(("t", trace.as_str()));
        }
        let _: String = conn.xadd(self.stream_key(queue), "*", &fields).await?;
        Ok(())
    }

    async fn claim(
        &self,
        queue: QueueName,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>> {
        self.ensure_group(queue).await?;
        if self.sweep_due(queue, consumer) {
            self.promote_due(queue).await?;
            if let Err(e) = self.prune_consumers(queue).await {
                tracing::debug!(queue = queue.as_str(), error = %e, "consumer pruning failed");
            }
            let taken = self.take_over_expired(queue, consumer, max).await;
            match taken {
                Ok(jobs) if !jobs.is_empty() => return Ok(jobs),
                Ok(_) => {}
                Err(e) if is_missing_group(&e) => {
                    // The group vanished (FLUSHALL, or the key was deleted):
                    // recreate it on the next call.
                    self.groups.lock().unwrap().remove(&queue);
                    return Ok(Vec::new());
                }
                Err(e) => return Err(e),
            }
        }
        match self.read_new(queue, consumer, max, wait).await {
            Err(e) if is_missing_group(&e) => {
                self.groups.lock().unwrap().remove(&queue);
                Ok(Vec::new())
            }
            other => other,
        }
    }

    async fn ack(&self, queue: QueueName, jobs: &[Claimed]) -> Result<()> {
        let mut conn = self.conn.clone();
        for chunk in jobs.chunks(500) {
            let mut call = self.scripts.ack.key(self.stream_key(queue));
            call.key(self.key(queue, "done"))
                .arg(GROUP)
                .arg(self.done_cap);
            let keep = self.done_cap > 0;
            for job in chunk {
                call.arg(&job.id);
                if !keep {
                    // Nothing is recorded: the script only needs the ids.
                    call.arg(&[""; DONE_FIELDS][..]);
                    continue;
                }
                let failures = if job.failures.is_empty() {
                    String::new()
                } else {
                    serde_json::to_string(&job.failures)?
                };
                let fields: [&str; DONE_FIELDS] = [
                    cut(&job.payload, DONE_PAYLOAD_MAX),
                    &job.attempt.to_string(),
                    &failures,
                    job.trace.as_deref().unwrap_or(""),
                    &job.enqueued_at.to_string(),
                    &job.worker,
                    &job.claimed_at.to_string(),
                    &job.ready_at.to_string(),
                ];
                call.arg(&fields[..]);
            }
            let _: i64 = call.invoke_async(&mut conn).await?;
        }
        Ok(())
    }

    async fn retry(
        &self,
        queue: QueueName,
        job: &Claimed,
        error: &str,
        delay: Duration,
    ) -> Result<()> {
        let failures = serde_json::to_string(&job.with_failure(error))?;
        self.later(queue, &[(job, job.attempt + 1, failures)], delay)
            .await
    }

    async fn defer(&self, queue: QueueName, jobs: &[Claimed], delay: Duration) -> Result<()> {
        let mut later = Vec::with_capacity(jobs.len());
        for job in jobs {
            let failures = serde_json::to_string(&job.failures)?;
            later.push((job, job.attempt, failures));
        }
        for chunk in later.chunks(500) {
            self.later(queue, chunk, delay).await?;
        }
        Ok(())
    }

    async fn renew(&self, queue: QueueName, consumer: &str, ids: &[String]) -> Result<usize> {
        let mut renewed = 0;
        let mut conn = self.conn.clone();
        for chunk in ids.chunks(500) {
            let mut call = self.scripts.renew.key(self.stream_key(queue));
            call.arg(GROUP).arg(consumer).arg(chunk);
            let n: usize = call.invoke_async(&mut conn).await?;
            renewed += n;
        }
        Ok(renewed)
    }

    async fn bury(&self, queue: QueueName, job: &Claimed, error: &str) -> Result<()> {
        let failures = serde_json::to_string(&job.with_failure(error))?;
        let mut conn = self.conn.clone();
        let _: i64 = self
            .scripts
            .bury
            .key(self.stream_key(queue))
            .key(self.key(queue, "dead"))
            .arg(GROUP)
            .arg(&job.id)
            .arg(
                &[
                    "p",
                    job.payload.as_str(),
                    "a",
                    &job.attempt.to_string(),
                    "f",
                    &failures,
                    "t",
                    job.trace.as_deref().unwrap_or(""),
                    "e",
                    &job.enqueued_at.to_string(),
                ][..],
            )
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn stats(&self, queue: QueueName) -> Result<QueueStats> {
        self.ensure_group(queue).await?;
        let mut conn = self.conn.clone();
        let (len, pending, retrying, dead, done): (u64, Value, u64, u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(self.stream_key(queue))
            .cmd("XPENDING")
            .arg(self.stream_key(queue))
            .arg(GROUP)
            .cmd("ZCARD")
            .arg(self.key(queue, "retry"))
            .cmd("XLEN")
            .arg(self.key(queue, "dead"))
            .cmd("XLEN")
            .arg(self.key(queue, "done"))
            .query_async(&mut conn)
            .await?;
        let in_flight = match pending {
            Value::Array(items) => match items.first() {
                Some(Value::Int(n)) => *n as u64,
                _ => 0,
            },
            _ => 0,
        };
        Ok(QueueStats {
            ready: len.saturating_sub(in_flight),
            in_flight,
            retrying,
            dead,
            done,
        })
    }

    async fn trim(&self, queue: QueueName, retention: Retention) -> Result<Trimmed> {
        let now = crate::now_millis();
        let cutoff = |age: Duration| (now - age.as_millis() as i64).max(0);
        let mut conn = self.conn.clone();
        // Exact MINID, not `~`: an approximate trim keeps whole radix nodes,
        // so records past their retention could linger indefinitely.
        let done: u64 = redis::cmd("XTRIM")
            .arg(self.key(queue, "done"))
            .arg("MINID")
            .arg(cutoff(retention.done))
            .query_async(&mut conn)
            .await?;
        if queue.holds_accepted_writes() {
            return Ok(Trimmed { done, dead: 0 });
        }
        let dead: u64 = redis::cmd("XTRIM")
            .arg(self.key(queue, "dead"))
            .arg("MINID")
            .arg(cutoff(retention.dead))
            .query_async(&mut conn)
            .await?;
        Ok(Trimmed { done, dead })
    }

    async fn dead_jobs(&self, queue: QueueName, limit: usize) -> Result<Vec<DeadJob>> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = conn
            .xrevrange_count(self.key(queue, "dead"), "+", "-", limit)
            .await?;
        reply.ids.iter().map(decode_dead).collect()
    }

    async fn dead_job(&self, queue: QueueName, id: &str) -> Result<Option<DeadJob>> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply =
            conn.xrange(self.key(queue, "dead"), id, id).await?;
        reply.ids.first().map(decode_dead).transpose()
    }

    async fn revive(&self, queue: QueueName, id: &str) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        let revived: Option<String> = self
            .scripts
            .revive
            .key(self.stream_key(queue))
            .key(self.key(queue, "dead"))
            .arg(id)
            .invoke_async(&mut conn)
            .await?;
        Ok(revived)
    }

    async fn discard(&self, queue: QueueName, id: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let deleted: i64 = conn.xdel(self.key(queue, "dead"), &[id]).await?;
        Ok(deleted == 1)
    }

    async fn retry_now(&self, queue: QueueName, id: &str) -> Result<bool> {
        self.take_retry(queue, id, true).await
    }

    async fn cancel(&self, queue: QueueName, state: JobState, id: &str) -> Result<bool> {
        match state {
            JobState::Pending if is_entry_id(id) => {
                let mut conn = self.conn.clone();
                let deleted: i64 = self
                    .scripts
                    .cancel_pending
                    .key(self.stream_key(queue))
                    .arg(GROUP)
                    .arg(id)
                    .invoke_async(&mut conn)
                    .await?;
                Ok(deleted == 1)
            }
            JobState::Retrying => self.take_retry(queue, id, false).await,
            _ => Ok(false),
        }
    }

    async fn jobs(
        &self,
        queue: QueueName,
        state: JobState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        let after = |default: &str| cursor.map_or(default.to_owned(), |c| format!("({c}"));
        let entries = match state {
            JobState::Retrying => return self.retrying_page(queue, cursor, limit).await,
            JobState::Pending => {
                let delivered = self.last_delivered(queue).await?;
                let ids = self
                    .newest(
                        self.stream_key(queue),
                        &after("+"),
                        &format!("({delivered}"),
                        limit + 1,
                    )
                    .await?;
                ids.iter()
                    .map(|e| decode_live(e, state, None))
                    .collect::<Result<Vec<_>>>()?
            }
            JobState::InFlight => {
                let delivered = self.last_delivered(queue).await?;
                if delivered == "0-0" {
                    return Ok(JobPage::default());
                }
                let end = match cursor {
                    Some(c) if id_order(c) <= id_order(&delivered) => format!("({c}"),
                    _ => delivered,
                };
                let ids = self
                    .newest(self.stream_key(queue), &end, "-", limit + 1)
                    .await?;
                let shown: Vec<&str> = ids.iter().take(limit).map(|e| e.id.as_str()).collect();
                let holders = self.holders(queue, &shown).await?;
                ids.iter()
                    .zip(holders.into_iter().chain(std::iter::repeat(None)))
                    .map(|(e, worker)| decode_live(e, state, worker))
                    .collect::<Result<Vec<_>>>()?
            }
            JobState::Done | JobState::Dead => {
                let key = self.settled_key(queue, state);
                let ids = self.newest(key, &after("+"), "-", limit + 1).await?;
                ids.iter()
                    .map(|e| decode_settled(e, state))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        let mut jobs = entries;
        let more = jobs.len() > limit;
        jobs.truncate(limit);
        let next = more.then(|| jobs.last().map(|j| j.id.clone())).flatten();
        Ok(JobPage { jobs, next })
    }

    async fn job(&self, queue: QueueName, state: JobState, id: &str) -> Result<Option<JobRecord>> {
        let mut conn = self.conn.clone();
        match state {
            JobState::Pending | JobState::InFlight => {
                let reply: redis::streams::StreamRangeReply =
                    conn.xrange(self.stream_key(queue), id, id).await?;
                let Some(entry) = reply.ids.first() else {
                    return Ok(None);
                };
                let delivered = self.last_delivered(queue).await?;
                if id_order(&entry.id) > id_order(&delivered) {
                    return decode_live(entry, JobState::Pending, None).map(Some);
                }
                let worker = self
                    .holders(queue, &[entry.id.as_str()])
                    .await?
                    .pop()
                    .flatten();
                decode_live(entry, JobState::InFlight, worker).map(Some)
            }
            JobState::Retrying => {
                let Some((due, job_id)) = retry_handle(id) else {
                    return Ok(None);
                };
                let members: Vec<String> = redis::cmd("ZRANGE")
                    .arg(self.key(queue, "retry"))
                    .arg(due)
                    .arg(due)
                    .arg("BYSCORE")
                    .query_async(&mut conn)
                    .await?;
                for m in members {
                    let job = decode_retrying(&m, due)?;
                    if job.job_id == job_id {
                        return Ok(Some(job));
                    }
                }
                Ok(None)
            }
            JobState::Done | JobState::Dead => {
                let key = self.settled_key(queue, state);
                let reply: redis::streams::StreamRangeReply = conn.xrange(key, id, id).await?;
                reply
                    .ids
                    .first()
                    .map(|e| decode_settled(e, state))
                    .transpose()
            }
        }
    }

    fn system(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    async fn retire(&self, queue: QueueName, consumer: &str) -> Result<()> {
        self.readers.lock().unwrap().remove(consumer);
        let mut conn = self.conn.clone();
        loop {
            let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(self.stream_key(queue))
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(500)
                .arg(consumer)
                .query_async(&mut conn)
                .await?;
            if pending.is_empty() {
                return Ok(());
            }
            // Deleting the consumer would drop these entries from the group
            // for good; re-append them instead, for any consumer to read at
            // once. The empty consumer itself is pruned later.
            let mut call = self.scripts.handback.key(self.stream_key(queue));
            call.arg(GROUP);
            for (id, ..) in &pending {
                call.arg(id);
            }
            let _: i64 = call.invoke_async(&mut conn).await?;
            tracing::info!(
                queue = queue.as_str(),
                consumer,
                jobs = pending.len(),
                "handed back unstarted jobs"
            );
            if pending.len() < 500 {
                return Ok(());
            }
        }
    }
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
