//! One write's accept on Redis: the script call, tried again after seeding
//! a missing counter or raising a reached ceiling, and the state an earlier
//! run under the same idempotency record wrote.
use super::{
    READ_WAIT, RedisIntake,
    accept::{Accept, LIMITS_PER_ACCEPT},
    counters::{Counter, ceiling_step},
};
use crate::{homes::AppKeys, idempotency, intake::WriteMeta, ratelimit};
use chat_links::{
    error::{Result, StoreError},
    redis_link,
};
use chat_queue::QueueName;

/// Tries of one accept through seeding and ceiling raises.
const MAX_ACCEPT_TRIES: usize = 16;

/// What an accept left: a new state, or the state an earlier run under the
/// same idempotency record wrote.
pub(super) enum Outcome {
    New { number: i64, version: i64 },
    Earlier(String),
}

impl RedisIntake {
    /// Runs the accept script; a new state comes back with its number (0
    /// when no counter is given) and version. Checks the limits the write
    /// carries (`WriteMeta::limits`) in the same call, and leaves their
    /// verdict there.
    pub(super) async fn accept(
        &self,
        keys: &AppKeys,
        counter: Option<Counter>,
        queue: QueueName,
        pending_key: &str,
        state_tail: &str,
        meta: WriteMeta,
    ) -> Result<Outcome> {
        let counter_key = counter
            .as_ref()
            .map(|c| self.counter_key(keys, c))
            .unwrap_or_else(|| self.accepter.none_key(keys.shard));
        let ceiling_key = counter.as_ref().map(|c| self.ceiling_key(keys, c));
        let idempotency_key = meta
            .idempotency
            .as_ref()
            .map(|link| idempotency::redis_record_key(keys, &link.key));
        let seq_key = keys.key("version");
        let stream_key = chat_queue::redis_stream_key(&self.prefix, keys.shard, queue);
        // The API folds at most two: the token's and the address's.
        let limits = meta.limits.as_ref().map(|f| f.limits()).unwrap_or_default();
        let limit_keys: Vec<_> = limits
            .iter()
            .take(LIMITS_PER_ACCEPT)
            .map(|l| {
                (
                    ratelimit::redis_key(&self.prefix, l),
                    l.cost_us(),
                    l.period_us(),
                )
            })
            .collect();
        // A create may find its counter missing (seeded once), or its
        // ceiling reached (raised, and under concurrent creates perhaps
        // reached again by the others before this one runs).
        for _ in 0..MAX_ACCEPT_TRIES {
            let accepted = self
                .accepter
                .accept(Accept {
                    shard: keys.shard,
                    counter_key: counter_key.clone(),
                    seq_key: seq_key.clone(),
                    stream_key: stream_key.clone(),
                    pending_key: pending_key.to_owned(),
                    state_tail: state_tail.to_owned(),
                    trace: meta.trace.clone(),
                    limits: limit_keys.clone(),
                    idempotency_key: idempotency_key.clone(),
                    ceiling_key: ceiling_key.clone(),
                })
                .await?;
            let n = accepted.number;
            if n != -1 && n != -3 && n != -4 && !limit_keys.is_empty() {
                let checked = &limits[..limit_keys.len()];
                let tats = &accepted.tats[..limit_keys.len()];
                if let Some(folded) = &meta.limits {
                    folded.record(ratelimit::verdict(
                        checked,
                        tats,
                        accepted.now,
                        accepted.wait,
                    ));
                }
            }
            match n {
                -2 => return Err(StoreError::RateLimited),
                -3 => {
                    let key = idempotency_key.as_deref().expect("only a linked write");
                    return self.earlier(key).await.map(Outcome::Earlier);
                }
                n if n >= 0 => {
                    // A ceiling running low is raised in the background, so
                    // a busy counter never waits for the database.
                    if let Some(counter) = &counter
                        && accepted.room < ceiling_step(n) / 2
                    {
                        self.raise_ahead(keys, counter, n);
                    }
                    return Ok(Outcome::New {
                        number: n,
                        version: accepted.version,
                    });
                }
                _ => {}
            }
            let counter = counter.as_ref().expect("only counters can be missing");
            if n == -1 {
                self.seed(counter, &counter_key).await?;
            } else {
                self.raise_ceiling(keys, counter).await?;
            }
        }
        Err(StoreError::Unavailable(
            "the number counter could not be seeded, or its ceiling raised".into(),
        ))
    }

    /// The state an earlier run under this idempotency record accepted.
    async fn earlier(&self, record: &str) -> Result<String> {
        let state: Option<String> = redis_link::until_run(READ_WAIT, || {
            let mut conn = self.conn.clone();
            async move {
                redis::cmd("HGET")
                    .arg(record)
                    .arg("a")
                    .query_async(&mut conn)
                    .await
            }
        })
        .await?;
        // Completed records drop the state: this run lost its lease to
        // another that wrote and answered, and a resend gets that answer.
        state.ok_or_else(|| {
            StoreError::OutcomeUnknown(
                "another request under this Idempotency-Key completed the write".into(),
            )
        })
    }
}
