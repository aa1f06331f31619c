//! The scenario's result: what each fault did, whether every write the
//! clients were told about came out exactly once, and whether search
//! caught up. Printed as a table plus one `FAULTS ` line; `failures`
//! turns it into assertions.

use std::{collections::BTreeMap, fmt, path::PathBuf};

use crate::record::{Failure, Tag, Window};

/// Key count and memory of the private Redis.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedisStats {
    pub keys: u64,
    pub used_memory: u64,
    /// Keys that are pending read-your-writes entries: they must go once
    /// their rows are persisted.
    pub pending_keys: u64,
    /// Keys that are `Idempotency-Key` records, kept for their retention
    /// by design, and the bytes they take (sampled).
    pub idempotency_keys: u64,
    pub idempotency_bytes: u64,
}

/// One fault as it ran. Times are seconds since the load started.
#[derive(Clone, Debug)]
pub struct FaultRow {
    pub name: String,
    pub started_at: f64,
    pub ended_at: f64,
    /// Writes answered 2xx between the start and the end.
    pub accepted_during: usize,
    /// Failed attempts (later retried) attributed to this fault.
    pub retries: usize,
    /// From the end of the fault until a probe written right after it
    /// was listed; `None`: never, within the run.
    pub resumed_after: Option<f64>,
    /// For the search outage: until the probe was found by a search.
    pub searchable_after: Option<f64>,
    pub note: String,
    /// The worker kills, which run under every other fault.
    pub background: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub run_id: String,
    /// The work dir, when it was kept.
    pub work_dir: Option<PathBuf>,
    pub setup_secs: f64,
    pub load_secs: f64,
    pub total_secs: f64,
    pub faults: Vec<FaultRow>,

    /// Writes the clients set out to make (probes not included).
    pub intended: usize,
    /// Writes answered 2xx, probes included.
    pub accepted: usize,
    pub first_try: usize,
    pub retried_ok: usize,
    /// Final answers other than 2xx and 409 (all 4xx if the server
    /// behaves): should be none.
    pub client_4xx: usize,
    /// A few of them, as `status body`.
    pub client_4xx_samples: Vec<String>,
    /// Writes still retrying when the run stopped waiting for them.
    pub unresolved: usize,
    pub retries: usize,
    /// Failed attempts by class: status code, `timeout`, `connect`, `io`.
    pub retries_by_class: BTreeMap<String, usize>,
    /// Failed attempts by API process (index into the two).
    pub retries_by_api: Vec<usize>,
    /// Failed attempts outside every fault's window.
    pub retries_unattributed: usize,

    pub listed: usize,
    pub persisted: usize,
    pub duplicated: usize,
    pub lost: usize,
    pub gaps: usize,
    pub unexpected: usize,
    pub wrong_body: usize,
    pub unresolved_listed: usize,
    /// Seconds after the load until every told write was listed; `None`
    /// if that never happened.
    pub all_listed_after: Option<f64>,

    /// Documents the search alias counts at the end (`None`: no answer).
    pub indexed: Option<u64>,
    /// Seconds after the listing until the index held them all.
    pub indexed_after: Option<f64>,
    /// Whether the name searches go through is an alias at the end, as
    /// the system sets it up, rather than missing or an index that a write
    /// auto-created after the emulator came back empty.
    pub search_alias: Option<bool>,
    /// The emulator's indices at the end, `name(docs)`.
    pub search_indices: String,

    pub redis_before: RedisStats,
    pub redis_after: RedisStats,
    /// With a search outage in the timeline: what a worker reported during
    /// it (`/health/ready` 503 naming search, `chat_backend_up` 0), or
    /// `Some(None)` when none did.
    pub search_outage_reported: Option<Option<String>>,
    /// Jobs in each queue's dead state at the end, from `/metrics`.
    pub dead_jobs: BTreeMap<String, u64>,
    pub worker_kills: usize,
    /// Roles that exited without being killed, and how often.
    pub self_exits: BTreeMap<String, usize>,
}

impl Report {
    /// Every violated property, in words; empty when the run was clean.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut count = |n: usize, what: &str| {
            if n > 0 {
                out.push(format!("{n} {what}"));
            }
        };
        count(
            self.duplicated,
            "extra copies of writes listed (duplicated)",
        );
        count(self.lost, "acknowledged writes not listed (lost)");
        count(self.gaps, "numbers missing from chats (gaps)");
        count(
            self.unexpected,
            "listed messages no client sent (unexpected)",
        );
        count(
            self.wrong_body,
            "acknowledged numbers listed with another body",
        );
        count(self.client_4xx, "writes refused with a 4xx");
        count(
            self.unresolved,
            "writes never answered 2xx before the run stopped retrying",
        );
        if self.accepted == 0 {
            out.push("no write was accepted at all".into());
        }
        if self.search_outage_reported == Some(None) {
            out.push("no worker reported the search outage in /health/ready and /metrics".into());
        }
        match self.indexed {
            None => out.push("the search index could not be counted".into()),
            Some(n) if (n as usize) < self.listed => out.push(format!(
                "search index holds {n} of {} persisted messages",
                self.listed
            )),
            Some(_) => {}
        }
        if self.search_alias == Some(false) {
            out.push(format!(
                "search alias missing at the end (indices: {})",
                self.search_indices
            ));
        }
        for f in &self.faults {
            if f.resumed_after.is_none() {
                out.push(format!("persistence never resumed after {}", f.name));
            }
        }
        out
    }

    /// The `FAULTS ` line: key=value pairs, no spaces in values.
    fn machine_line(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("none".to_owned(), |s| format!("{s:.1}"));
        let resumed_max = self
            .faults
            .iter()
            .filter_map(|f| f.resumed_after)
            .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
        let unresumed = self
            .faults
            .iter()
            .filter(|f| f.resumed_after.is_none())
            .count();
        format!(
            "FAULTS run={} accepted={} first_try={} retried_ok={} client_4xx={} unresolved={} \
             retries={} listed={} persisted={} duplicated={} lost={} gaps={} unexpected={} \
             wrong_body={} all_listed_s={} indexed={} indexed_s={} search_alias={} \
             faults={} unresumed={} resumed_max_s={} worker_kills={} self_exits={} \
             redis_keys_before={} redis_keys_after={} redis_mem_before={} redis_mem_after={} \
             redis_pending_after={} redis_idempotency_after={} redis_idempotency_bytes={} \
             load_s={:.1} total_s={:.1} failures={}",
            self.run_id,
            self.accepted,
            self.first_try,
            self.retried_ok,
            self.client_4xx,
            self.unresolved,
            self.retries,
            self.listed,
            self.persisted,
            self.duplicated,
            self.lost,
            self.gaps,
            self.unexpected,
            self.wrong_body,
            opt(self.all_listed_after),
            self.indexed.map_or("none".to_owned(), |n| n.to_string()),
            opt(self.indexed_after),
            self.search_alias
                .map_or("unknown", |a| if a { "yes" } else { "no" }),
            self.faults.len(),
            unresumed,
            opt(resumed_max),
            self.worker_kills,
            self.self_exits.values().sum::<usize>(),
            self.redis_before.keys,
            self.redis_after.keys,
            self.redis_before.used_memory,
            self.redis_after.used_memory,
            self.redis_after.pending_keys,
            self.redis_after.idempotency_keys,
            self.redis_after.idempotency_bytes,
            self.load_secs,
            self.total_secs,
            self.failures().len(),
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<f64>| v.map_or("never".to_owned(), |s| format!("{s:.1}s"));
        writeln!(f, "fault scenario {}", self.run_id)?;
        writeln!(
            f,
            "{:<32} {:>7} {:>7} {:>9} {:>7} {:>9} {:>10}  note",
            "fault", "start", "end", "accepted", "retries", "resumed", "searchable"
        )?;
        for r in &self.faults {
            writeln!(
                f,
                "{:<32} {:>6.1}s {:>6.1}s {:>9} {:>7} {:>9} {:>10}  {}",
                r.name,
                r.started_at,
                r.ended_at,
                r.accepted_during,
                r.retries,
                opt(r.resumed_after),
                r.searchable_after
                    .map_or("-".to_owned(), |s| format!("{s:.1}s")),
                r.note
            )?;
        }
        writeln!(
            f,
            "writes: {} intended, {} accepted ({} first try, {} after retries), {} refused 4xx, {} unresolved",
            self.intended,
            self.accepted,
            self.first_try,
            self.retried_ok,
            self.client_4xx,
            self.unresolved
        )?;
        for s in &self.client_4xx_samples {
            writeln!(f, "  refused: {s}")?;
        }
        let classes: Vec<String> = self
            .retries_by_class
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        writeln!(
            f,
            "retries: {} ({}); by api {:?}; outside any fault {}",
            self.retries,
            classes.join(" "),
            self.retries_by_api,
            self.retries_unattributed
        )?;
        writeln!(
            f,
            "check: listed {}, persisted {}, duplicated {}, lost {}, gaps {}, unexpected {}, wrong body {}, unresolved listed {}; all listed after {}",
            self.listed,
            self.persisted,
            self.duplicated,
            self.lost,
            self.gaps,
            self.unexpected,
            self.wrong_body,
            self.unresolved_listed,
            opt(self.all_listed_after)
        )?;
        writeln!(
            f,
            "search: indexed {} of {} persisted, after {}; alias {}; indices [{}]",
            self.indexed.map_or("?".to_owned(), |n| n.to_string()),
            self.listed,
            opt(self.indexed_after),
            self.search_alias
                .map_or("unknown", |a| if a { "present" } else { "MISSING" }),
            self.search_indices,
        )?;
        writeln!(
            f,
            "redis: keys {} -> {}, used_memory {} -> {} bytes; after: {} pending entries, {} Idempotency-Key records (~{} bytes, kept for their retention by design)",
            self.redis_before.keys,
            self.redis_after.keys,
            self.redis_before.used_memory,
            self.redis_after.used_memory,
            self.redis_after.pending_keys,
            self.redis_after.idempotency_keys,
            self.redis_after.idempotency_bytes,
        )?;
        writeln!(
            f,
            "roles: {} worker kills; self exits {:?}; dead jobs {:?}",
            self.worker_kills, self.self_exits, self.dead_jobs
        )?;
        writeln!(
            f,
            "time: setup {:.1}s, load {:.1}s, total {:.1}s{}",
            self.setup_secs,
            self.load_secs,
            self.total_secs,
            self.work_dir.as_ref().map_or(String::new(), |d| format!(
                "; work dir kept at {}",
                d.display()
            ))
        )?;
        let failures = self.failures();
        if failures.is_empty() {
            writeln!(f, "no property violated")?;
        } else {
            writeln!(f, "violated:")?;
            for v in &failures {
                writeln!(f, "  - {v}")?;
            }
        }
        write!(f, "{}", self.machine_line())
    }
}

/// Which window each failed attempt belongs to: the latest-started fault
/// whose window (plus `grace`, for connections that only notice later)
/// covers it, a background fault only when no other does. Returns the
/// count per window and the unattributed rest.
pub(crate) fn attribute(
    windows: &[Window],
    failures: &[Failure],
    grace: f64,
) -> (Vec<usize>, usize) {
    let mut per = vec![0; windows.len()];
    let mut outside = 0;
    for fail in failures {
        let covers = |w: &Window| {
            w.started <= fail.at && fail.at <= w.ended.unwrap_or(f64::INFINITY) + grace
        };
        let pick = |background: bool| {
            windows
                .iter()
                .enumerate()
                .filter(|(_, w)| (w.tag == Tag::Background) == background && covers(w))
                .max_by(|a, b| a.1.started.total_cmp(&b.1.started))
                .map(|(i, _)| i)
        };
        match pick(false).or_else(|| pick(true)) {
            Some(i) => per[i] += 1,
            None => outside += 1,
        }
    }
    (per, outside)
}

#[cfg(test)]
mod tests;
