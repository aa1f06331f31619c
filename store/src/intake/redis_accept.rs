//! Accepting writes on Redis in one round trip per group of requests.
//!
//! Each accept reserves the number (for a create) and a version, enqueues
//! the job carrying the row's new state, and stores that state as the
//! pending entry, atomically, in one script. Requests that arrive while a
//! script call is in flight are sent together in the next call: under load
//! one `EVALSHA` carries dozens of accepts, which divides Redis's per-call
//! cost (parsing, Lua set-up, the reply) among them; when idle, a request
//! goes alone at once and waits for nobody.
use std::sync::Arc;

use redis::{Script, aio::ConnectionManager};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::{Result, StoreError};

/// Per accept: KEYS number counter ('' for an update), version counter,
/// queue stream (fields as `RedisStreamQueue::enqueue` writes them); ARGV
/// pending key (a create appends its number), the row's JSON without its
/// opening brace, and the sender's traceparent ('' when untraced), which
/// rides in the job as field `t`. ARGV[1] is the pending lifetime. Returns
/// number and version per accept.
///
/// The version is `max(last + 1, now in µs)`: it grows per application, and
/// if Redis loses the key it restarts above every version handed out
/// before, so newer writes still win. Because every version of an
/// application passes through its counter here, the one being stored is
/// always the newest, and the pending entry is overwritten unconditionally.
///
/// A missing number counter yields -1 instead of starting at 1: the caller
/// seeds it from the database and retries.
///
/// The pending key is built here because the number is only known here;
/// it shares the counter's hash tag. The stream does not, so this script
/// needs a single Redis node (a cluster would need the queue sharded by
/// application).
const ACCEPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = ARGV[1]
local out = {}
for i = 0, #KEYS / 3 - 1 do
  local counter, seq, stream = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local pending, tail, trace = ARGV[3 * i + 2], ARGV[3 * i + 3], ARGV[3 * i + 4]
  local n, head = 0, nil
  if counter ~= '' then
    local last = redis.call('GET', counter)
    if last then n = tonumber(last) + 1 else n = -1 end
  end
  if n < 0 then
    out[#out + 1] = -1
    out[#out + 1] = 0
  else
    local v = math.max(tonumber(redis.call('GET', seq) or '0') + 1, now)
    if counter ~= '' then
      pending = pending .. string.format('%d', n)
      head = string.format('{"number":%d,"version":%d,', n, v)
    else
      head = string.format('{"version":%d,', v)
    end
    local state = head .. tail
    if trace == '' then
      redis.call('XADD', stream, '*', 'p', state)
    else
      redis.call('XADD', stream, '*', 'p', state, 't', trace)
    end
    if counter ~= '' then redis.call('SET', counter, string.format('%d', n)) end
    redis.call('SET', seq, string.format('%d', v))
    redis.call('SET', pending, state, 'EX', ttl)
    out[#out + 1] = n
    out[#out + 1] = v
  end
end
return out
"#;

/// Accepts per script call, at most: bounds the time Redis spends in one
/// script (and so blocks other clients) to well under a millisecond.
const MAX_GROUP: usize = 64;
/// Script calls in flight at once.
const MAX_CALLS: usize = 4;

pub(super) struct Accept {
    pub counter_key: String,
    pub seq_key: String,
    pub stream_key: String,
    pub pending_key: String,
    pub state_tail: String,
    pub trace: Option<String>,
}

type Reply = oneshot::Sender<Result<(i64, i64)>>;

#[derive(Clone)]
pub(super) struct Accepter {
    tx: mpsc::Sender<(Accept, Reply)>,
}

impl Accepter {
    pub fn spawn(conn: ConnectionManager, pending_ttl_secs: u64) -> Self {
        let (tx, rx) = mpsc::channel(MAX_GROUP * MAX_CALLS * 4);
        tokio::spawn(dispatch(rx, conn, pending_ttl_secs.max(1)));
        Self { tx }
    }

    /// Returns (number, version); number is 0 for an update and -1 when the
    /// counter is missing.
    pub async fn accept(&self, accept: Accept) -> Result<(i64, i64)> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((accept, reply))
            .await
            .map_err(|_| StoreError::Other("the accept dispatcher has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Other("the accept dispatcher dropped a request".into()))?
    }
}

async fn dispatch(mut rx: mpsc::Receiver<(Accept, Reply)>, conn: ConnectionManager, ttl: u64) {
    let script = Arc::new(Script::new(ACCEPT));
    let calls = Arc::new(Semaphore::new(MAX_CALLS));
    loop {
        // Waiting for a free call slot first lets the group grow meanwhile.
        let Ok(slot) = calls.clone().acquire_owned().await else {
            return;
        };
        let mut group = Vec::with_capacity(MAX_GROUP);
        if rx.recv_many(&mut group, MAX_GROUP).await == 0 {
            return;
        }
        let (conn, script) = (conn.clone(), script.clone());
        tokio::spawn(async move {
            let (accepts, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
            match call(&script, conn, ttl, &accepts).await {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(e) => {
                    let unavailable = e.is_unavailable();
                    let message = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(if unavailable {
                            StoreError::Unavailable(message.clone())
                        } else {
                            StoreError::Other(message.clone())
                        }));
                    }
                }
            }
            drop(slot);
        });
    }
}

async fn call(
    script: &Script,
    mut conn: ConnectionManager,
    ttl: u64,
    accepts: &[Accept],
) -> Result<Vec<(i64, i64)>> {
    let mut invocation = script.prepare_invoke();
    invocation.arg(ttl);
    for a in accepts {
        invocation
            .key(&a.counter_key)
            .key(&a.seq_key)
            .key(&a.stream_key)
            .arg(&a.pending_key)
            .arg(&a.state_tail)
            .arg(a.trace.as_deref().unwrap_or(""));
    }
    let flat: Vec<i64> = invocation.invoke_async(&mut conn).await?;
    if flat.len() != accepts.len() * 2 {
        return Err(StoreError::Other(format!(
            "the accept script answered {} values for {} accepts",
            flat.len(),
            accepts.len()
        )));
    }
    Ok(flat.chunks(2).map(|p| (p[0], p[1])).collect())
}
