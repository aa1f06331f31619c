//! Accepting writes on Redis in one round trip per group of requests.
//!
//! Each accept reserves the number (for a create) and a version, enqueues
//! the job carrying the row's new state, and stores that state as the
//! pending entry, atomically, in one script. Requests that arrive while a
//! script call is in flight are sent together in the next call: under load
//! one `EVALSHA` carries dozens of accepts, which divides Redis's per-call
//! cost (parsing, Lua set-up, the reply) among them; when idle, a request
//! goes alone at once and waits for nobody.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chat_links::grouping::{Group, GroupWork, Grouping, Stopped, WholeGroup, whole_then_alone};
use redis::Script;

use crate::ratelimit::GCRA_LUA;
use chat_links::{
    error::{Result, StoreError},
    redis_link::{self, Outcome, RedisConn},
};

/// Per accept: KEYS number counter (none for an update), version counter,
/// queue stream (written by `chat_queue::redis_enqueue_lua`), two
/// rate-limit keys, the idempotency record and the number ceiling (each
/// none when unused); ARGV pending key (a create appends its number), the row's
/// JSON without its opening brace, the sender's traceparent ('' when
/// untraced), which rides in the job, and each limit key's
/// cost and period in µs. ARGV[1] is the pending lifetime, ARGV[2] the
/// key that stands for none. Returns the
/// time used, then per accept: number, version, the limits' wait, the two
/// limit keys' TATs, and the numbers left below the ceiling.
///
/// The version is `max(last + 1, now in µs)`: it grows per application, and
/// if Redis loses the key it restarts above every version handed out
/// before, so newer writes still win. Because every version of an
/// application passes through its counter here, the one being stored is
/// always the newest, and the pending entry is overwritten unconditionally.
///
/// Special numbers, each returned before anything is counted or written,
/// so such a write spends no number and no limit:
/// - -1: the number counter is missing; the caller seeds it and retries;
/// - -2: the limits refuse the write;
/// - -3: an earlier run under the same idempotency record already wrote
///   this request; its state is in the record's field `a`, or the record
///   is already completed (`s`) and its response is what a resend gets;
/// - -4: the next number would pass the ceiling, the highest number the
///   database has recorded as possibly handed out; the caller raises it
///   there first, so that a counter seeded again after Redis lost its data
///   never hands out a number twice.
///
/// The pending key is built here because the number is only known here;
/// it shares the counter's hash tag, as do the idempotency record, the
/// ceiling and, on a cluster, the stream (the application's home shard's).
/// A key an accept does not use is ARGV[2] ('' on one node; on a cluster a
/// key of the group's slot, since a script's keys must share one slot).
/// The limit keys do not share the slot, so a cluster checks limits
/// apart and never folds them here. On a cluster a group holds accepts
/// of one shard only.
/// Rate-limit keys each accept carries, used or not; the script's `KEYS`
/// and `ARGV` strides (7 and 7) count them.
pub(super) const LIMITS_PER_ACCEPT: usize = 2;

const ACCEPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl, none = ARGV[1], ARGV[2]
local out = {now}
for i = 0, #KEYS / 7 - 1 do
  local counter, seq, stream = KEYS[7 * i + 1], KEYS[7 * i + 2], KEYS[7 * i + 3]
  local idem, ceil = KEYS[7 * i + 6], KEYS[7 * i + 7]
  local pending, tail, trace = ARGV[7 * i + 3], ARGV[7 * i + 4], ARGV[7 * i + 5]
  local limits, costs, periods = {}, {}, {}
  for j = 0, 1 do
    if KEYS[7 * i + 4 + j] ~= none then
      limits[#limits + 1] = KEYS[7 * i + 4 + j]
      costs[#limits] = tonumber(ARGV[7 * i + 6 + 2 * j])
      periods[#limits] = tonumber(ARGV[7 * i + 7 + 2 * j])
    end
  end
  local n, head, room = 0, nil, 0
  if idem ~= none and (redis.call('HEXISTS', idem, 'a') == 1
      or redis.call('HEXISTS', idem, 's') == 1) then
    n = -3
  elseif counter ~= none then
    local last = redis.call('GET', counter)
    if last then n = tonumber(last) + 1 else n = -1 end
    if n > 0 then
      room = tonumber(redis.call('GET', ceil) or '0') - n
      if room < 0 then n = -4 end
    end
  end
  local wait, tats = 0, {}
  if n >= 0 then
    wait, tats = gcra(now, limits, costs, periods)
    if wait > 0 then n = -2 end
  end
  if n < 0 then
    out[#out + 1] = n
    out[#out + 1] = 0
  else
    local v = math.max(tonumber(redis.call('GET', seq) or '0') + 1, now)
    if counter ~= none then
      pending = pending .. string.format('%d', n)
      head = string.format('{"number":%d,"version":%d,', n, v)
    else
      head = string.format('{"version":%d,', v)
    end
    local state = head .. tail
    enqueue_job(stream, state, trace)
    if counter ~= none then redis.call('SET', counter, string.format('%d', n)) end
    redis.call('SET', seq, string.format('%d', v))
    redis.call('SET', pending, state, 'EX', ttl)
    if idem ~= none then redis.call('HSET', idem, 'a', state) end
    out[#out + 1] = n
    out[#out + 1] = v
  end
  out[#out + 1] = wait
  out[#out + 1] = tats[1] or 0
  out[#out + 1] = tats[2] or 0
  out[#out + 1] = room
end
return out
"#;

/// Values the script answers per accept.
const STRIDE: usize = 6;

/// Accepts per script call, at most: bounds the time Redis spends in one
/// script (and so blocks other clients) to well under a millisecond.
const MAX_GROUP: usize = 64;
/// Script calls in flight at once.
const MAX_CALLS: usize = 4;
/// How long an accepted group waits for a replica to hold it.
const REPLICA_WAIT: Duration = Duration::from_secs(2);
/// How long a count of a master's replicas is trusted.
const REPLICAS_FRESH: Duration = Duration::from_secs(1);
/// How long a group that Redis refused to run is sent again before its
/// requests are told that storage is unavailable.
const NOT_RUN_WAIT: Duration = Duration::from_secs(10);

pub(super) struct Accept {
    /// The home shard whose slot every key below is in (`None` on one
    /// node): accepts of different shards never share a call.
    pub shard: Option<u16>,
    pub counter_key: String,
    pub seq_key: String,
    pub stream_key: String,
    pub pending_key: String,
    pub state_tail: String,
    pub trace: Option<String>,
    /// Up to two limits to check first: Redis key, cost and period in µs.
    pub limits: Vec<(String, i64, i64)>,
    /// The idempotency record to check first and to record the state in.
    pub idempotency_key: Option<String>,
    /// The ceiling of the number counter (creates only).
    pub ceiling_key: Option<String>,
}

/// What the script answered for one accept.
#[derive(Clone, Copy, Debug)]
pub(super) struct Accepted {
    /// The reserved number; 0 for an update, and the special numbers the
    /// script describes (-1 to -4).
    pub number: i64,
    pub version: i64,
    /// The limits' wait in µs (0 when admitted), the script's clock, and
    /// each limit key's TAT: what `ratelimit::verdict` needs.
    pub wait: i64,
    pub now: i64,
    pub tats: [i64; LIMITS_PER_ACCEPT],
    /// Numbers the counter may still hand out below its ceiling.
    pub room: i64,
}

type AcceptGroup = Group<Accept, Result<Accepted>>;

/// Sends each group of accepts in one script call: one group for the
/// node, or one per shard of a cluster.
pub(super) struct Accepter {
    script: Script,
    conn: RedisConn,
    ttl: u64,
    prefix: String,
    groups: Mutex<HashMap<Option<u16>, AcceptGroup>>,
}

impl Accepter {
    pub fn new(conn: RedisConn, prefix: &str, pending_ttl_secs: u64) -> Self {
        Self {
            script: Script::new(&format!(
                "{GCRA_LUA}{}{ACCEPT}",
                chat_queue::redis_enqueue_lua()
            )),
            conn,
            ttl: pending_ttl_secs.max(1),
            prefix: prefix.to_owned(),
            groups: Mutex::new(HashMap::new()),
        }
    }

    fn group(&self, shard: Option<u16>) -> AcceptGroup {
        let mut groups = self.groups.lock().unwrap();
        let group = groups.entry(shard).or_insert_with(|| {
            let work = AcceptWork {
                script: self.script.clone(),
                conn: self.conn.clone(),
                ttl: self.ttl,
                none: self.none_key(shard),
                replicas: u32::from(shard.is_some()),
                seen: Mutex::new(None),
            };
            let grouping = Grouping {
                max: MAX_GROUP,
                // An idle request goes alone at once and waits for nobody.
                linger: Duration::ZERO,
                in_flight: MAX_CALLS,
            };
            Group::spawn(Arc::new(work), grouping)
        });
        group.clone()
    }

    /// The key that stands for "none" in an accept of `shard`.
    pub fn none_key(&self, shard: Option<u16>) -> String {
        match shard {
            None => String::new(),
            Some(k) => format!("{}:none", chat_queue::redis_shard_tag(&self.prefix, k)),
        }
    }

    pub async fn accept(&self, accept: Accept) -> Result<Accepted> {
        self.group(accept.shard)
            .ask(accept)
            .await
            .map_err(|Stopped| StoreError::Other("the accept dispatcher has stopped".into()))?
    }
}

struct AcceptWork {
    script: Script,
    conn: RedisConn,
    ttl: u64,
    /// The key standing for none in this group's slot.
    none: String,
    /// Replicas that must hold a group before it is answered: one on a
    /// cluster (see `RedisConn::replicated`), none on one node.
    replicas: u32,
    /// The replicas the shard's master has, and when that was read.
    seen: Mutex<Option<(Instant, u32)>>,
}

impl AcceptWork {
    /// How many replicas must hold an accepted group: one, unless the
    /// shard's master has none connected (its replica died, or took over
    /// from it): then the master's own copy is all there is, and waiting
    /// would only turn every write into an unknown outcome.
    async fn replicas_to_wait_for(&self, key: &str) -> Result<u32> {
        if self.replicas == 0 {
            return Ok(0);
        }
        let fresh = *self.seen.lock().unwrap();
        let connected = match fresh {
            Some((at, n)) if at.elapsed() < REPLICAS_FRESH => n,
            _ => {
                let mut conn = self.conn.clone();
                let n = conn.connected_replicas(key).await?;
                if n == 0 {
                    tracing::warn!(
                        key,
                        "this shard's master has no replica: accepted writes are on one node \
                         until one is back"
                    );
                }
                *self.seen.lock().unwrap() = Some((Instant::now(), n));
                n
            }
        };
        Ok(self.replicas.min(connected))
    }
}

#[async_trait]
impl GroupWork<Accept> for AcceptWork {
    type Answer = Result<Accepted>;

    async fn answer(&self, accepts: Vec<Accept>) -> Vec<Result<Accepted>> {
        whole_then_alone(self, accepts).await
    }
}

/// One script call is atomic: a failed group failed for all.
#[async_trait]
impl WholeGroup<Accept> for AcceptWork {
    type Answer = Result<Accepted>;
    type Error = StoreError;

    async fn run(&self, group: &[Accept]) -> Result<Vec<Result<Accepted>>> {
        let answers = call(self, group).await?;
        Ok(answers.into_iter().map(Ok).collect())
    }

    fn failed(&self, e: &StoreError) -> Result<Accepted> {
        Err(answer_lost(e))
    }
}

/// What each request of a group that failed learns: a group whose answer
/// was lost leaves each of them not knowing whether it was accepted.
fn answer_lost(e: &StoreError) -> StoreError {
    match e {
        StoreError::Redis(r) if redis_link::Outcome::of(r) == Outcome::Unknown => {
            StoreError::OutcomeUnknown(e.to_string())
        }
        e => e.replicate(),
    }
}

async fn call(work: &AcceptWork, accepts: &[Accept]) -> Result<Vec<Accepted>> {
    let none = work.none.as_str();
    let mut invocation = work.script.prepare_invoke();
    invocation.arg(work.ttl).arg(none);
    for a in accepts {
        invocation
            .key(&a.counter_key)
            .key(&a.seq_key)
            .key(&a.stream_key)
            .arg(&a.pending_key)
            .arg(&a.state_tail)
            .arg(a.trace.as_deref().unwrap_or(""));
        for j in 0..LIMITS_PER_ACCEPT {
            match a.limits.get(j) {
                Some((key, cost, period)) => invocation.key(key).arg(cost).arg(period),
                None => invocation.key(none).arg(0).arg(0),
            };
        }
        invocation
            .key(a.idempotency_key.as_deref().unwrap_or(none))
            .key(a.ceiling_key.as_deref().unwrap_or(none));
    }
    // A group that never ran (Redis restarting: refused, then loading) is
    // sent again until it runs; one whose answer was lost is not, since it
    // may have run: its requests learn that the outcome is unknown.
    let flat: Vec<i64> = redis_link::until_run(NOT_RUN_WAIT, || {
        let mut conn = work.conn.clone();
        let invocation = &invocation;
        async move { invocation.invoke_async(&mut conn).await }
    })
    .await?;
    let slot_key = &accepts[0].seq_key;
    let wanted = work
        .replicas_to_wait_for(slot_key)
        .await
        .map_err(|e| StoreError::OutcomeUnknown(format!("asking for the replicas: {e}")))?;
    if wanted > 0 {
        let mut conn = work.conn.clone();
        let held = conn
            .replicated(slot_key, wanted, REPLICA_WAIT)
            .await
            .map_err(|e| StoreError::OutcomeUnknown(format!("waiting for a replica: {e}")))?;
        if held < wanted {
            work.seen.lock().unwrap().take();
            // Accepted by the master alone: a failover now would lose it,
            // or it may reach the replica yet. The client cannot be told
            // either way.
            return Err(StoreError::OutcomeUnknown(format!(
                "accepted, but no replica confirmed it within {REPLICA_WAIT:?}"
            )));
        }
    }
    if flat.len() != 1 + accepts.len() * STRIDE {
        return Err(StoreError::Other(format!(
            "the accept script answered {} values for {} accepts",
            flat.len(),
            accepts.len()
        )));
    }
    let now = flat[0];
    Ok(flat[1..]
        .chunks(STRIDE)
        .map(|a| Accepted {
            number: a[0],
            version: a[1],
            wait: a[2],
            now,
            tats: [a[3], a[4]],
            room: a[5],
        })
        .collect())
}
