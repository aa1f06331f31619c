//! The Lua scripts of the Redis queue: each settles or moves a job in one
//! atomic step, on keys of one queue (one hash tag, so one cluster slot).
use redis::Script;

use super::wire::{DONE_RECORD, fields_lua, lua_list};

/// Settles jobs as done: ack, record, and delete, in one step, so a crash
/// cannot leave an acked entry behind in the stream. ARGV holds nine
/// values per job: its id, then the record's fields in [`DONE_RECORD`]
/// order, each "" when absent.
/// Only a job this call acked is recorded, so a double ack, a late ack
/// after a takeover or an unknown id leaves no second record. The caller
/// sends the payload it already holds: reading it back with XRANGE here
/// doubled the script's cost per job. `MAXLEN ~` bounds the done stream
/// between housekeeping runs.
pub(super) const ACK: &str = r#"
local names = NAMES
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

/// Moves jobs to the retry set, each atomically with its ack, so a job is
/// never both pending and scheduled. ARGV: group, then per job its id, due
/// time and retry-set member. Only a job this consumer group still holds
/// is moved: one settled meanwhile (taken over and acked) stays settled.
pub(super) const LATER: &str = r#"
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
pub(super) const BURY: &str = r#"
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
pub(super) const RENEW: &str = r#"
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
pub(super) const HANDBACK: &str = r#"
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
/// entry. The field names (`FP` …) come from [`fields_lua`].
pub(super) const REVIVE: &str = r#"
local entry = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])[1]
if not entry then return false end
local f = {}
for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
local fields = {FP, f[FP], FA, '1', FF, f[FF] or '[]'}
for _, name in ipairs({FT, FE}) do
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
pub(super) const APPEND_RETRY: &str = r#"
local function append(stream, job)
  local fields = {FP, job.p, FA, job.a, FF, job.f}
  for name, value in pairs({[FT] = job.t, [FE] = job.e}) do
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
  redis.call('XADD', stream, '*', unpack(fields))
end
"#;

/// Moves at most ARGV[2] due retries back to the stream.
pub(super) const PROMOTE: &str = r#"
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
pub(super) const TAKE_RETRY: &str = r#"
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
pub(super) const CANCEL_PENDING: &str = r#"
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

/// Removes the consumers of group ARGV[1] that own no pending entry and
/// have been idle for ARGV[2] ms; returns how many. The look and the
/// removal are one step: read apart, a consumer could claim entries
/// between them, and `DELCONSUMER` would drop those from the pending
/// list, where no takeover finds them again.
pub(super) const PRUNE: &str = r#"
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    n = n + 1
  end
end
return n
"#;

pub(super) struct Scripts {
    pub(super) ack: Script,
    pub(super) handback: Script,
    pub(super) later: Script,
    pub(super) renew: Script,
    pub(super) bury: Script,
    pub(super) promote: Script,
    pub(super) revive: Script,
    pub(super) take_retry: Script,
    pub(super) cancel_pending: Script,
    pub(super) prune: Script,
}

impl Scripts {
    pub(super) fn load() -> Self {
        Self {
            ack: Script::new(&ACK.replace("NAMES", &lua_list(&DONE_RECORD))),
            handback: Script::new(HANDBACK),
            later: Script::new(LATER),
            renew: Script::new(RENEW),
            bury: Script::new(BURY),
            promote: Script::new(&format!("{}{APPEND_RETRY}{PROMOTE}", fields_lua())),
            revive: Script::new(&format!("{}{REVIVE}", fields_lua())),
            take_retry: Script::new(&format!("{}{APPEND_RETRY}{TAKE_RETRY}", fields_lua())),
            cancel_pending: Script::new(CANCEL_PENDING),
            prune: Script::new(PRUNE),
        }
    }
}
