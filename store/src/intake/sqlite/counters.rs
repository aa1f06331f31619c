//! Many counters moved at once: the numbers and versions of a group's new
//! messages, one statement for every chat's numbers and one per
//! application for versions, instead of two statements per message.
use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DatabaseTransaction};

use super::stmt;
use chat_links::error::Result;

/// For each scope, the next value to hand out and the last one taken.
pub(super) type Taken = HashMap<String, (i64, i64)>;

/// The next of the values taken for `scope`, in order.
pub(super) fn next_of(taken: &mut Taken, scope: &str) -> i64 {
    let slot = taken
        .get_mut(scope)
        .expect("values were taken for every scope");
    debug_assert!(slot.0 <= slot.1, "more values handed out than taken");
    slot.0 += 1;
    slot.0 - 1
}

/// Each distinct scope with how often it appears, in first-seen order.
fn tally(scopes: &[String]) -> Vec<(&str, i64)> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut tally: Vec<(&str, i64)> = Vec::new();
    for s in scopes {
        match seen.get(s.as_str()) {
            Some(&i) => tally[i].1 += 1,
            None => {
                seen.insert(s, tally.len());
                tally.push((s, 1));
            }
        }
    }
    tally
}

/// Takes as many numbers from each scope's counter as the scope appears
/// in `scopes`. A missing counter is seeded from `highest(scope)`, the
/// highest number already persisted.
pub(super) async fn take<F, Fut>(
    txn: &DatabaseTransaction,
    scopes: &[String],
    highest: F,
) -> Result<Taken>
where
    F: Fn(&str) -> Fut,
    Fut: Future<Output = Result<i64>>,
{
    let tally = tally(scopes);
    let mut taken = Taken::with_capacity(tally.len());
    // 3 values a scope; a group holds at most a few hundred.
    for chunk in tally.chunks(5_000) {
        let cases = "WHEN ? THEN ? ".repeat(chunk.len());
        let list = vec!["?"; chunk.len()].join(", ");
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 3);
        for (scope, k) in chunk {
            values.extend([(*scope).into(), (*k).into()]);
        }
        values.extend(chunk.iter().map(|(scope, _)| (*scope).into()));
        let bumped = txn
            .query_all_raw(stmt(
                &format!(
                    "UPDATE counters SET value = value + CASE scope {cases}END \
                     WHERE scope IN ({list}) RETURNING scope, value"
                ),
                values,
            ))
            .await?;
        let mut last: HashMap<String, i64> = HashMap::with_capacity(bumped.len());
        for row in bumped {
            last.insert(row.try_get_by_index(0)?, row.try_get_by_index(1)?);
        }
        for (scope, k) in chunk {
            let end = match last.get(*scope) {
                Some(&end) => end,
                None => {
                    let end = highest(scope).await? + k;
                    txn.execute_raw(stmt(
                        "INSERT INTO counters (scope, value) VALUES (?, ?)",
                        vec![(*scope).into(), end.into()],
                    ))
                    .await?;
                    end
                }
            };
            taken.insert((*scope).to_owned(), (end - k + 1, end));
        }
    }
    Ok(taken)
}

/// Takes as many versions from each application's counter (`v:<id>`) as
/// it appears in `apps`: the first is `max(last + 1, now in µs)` and the
/// rest follow it, as if taken one by one.
pub(super) async fn versions(txn: &DatabaseTransaction, apps: &[String]) -> Result<Taken> {
    let now = chat_links::now_micros();
    let mut taken = Taken::new();
    for (scope, k) in tally(apps) {
        let row = txn
            .query_one_raw(stmt(
                "INSERT INTO counters (scope, value) VALUES (?, ?) \
                 ON CONFLICT (scope) DO UPDATE SET value = MAX(counters.value + ?, excluded.value) \
                 RETURNING value",
                vec![scope.into(), (now + k - 1).into(), k.into()],
            ))
            .await?;
        let end: i64 = match row {
            Some(row) => row.try_get_by_index(0)?,
            None => now + k - 1,
        };
        taken.insert(scope.to_owned(), (end - k + 1, end));
    }
    Ok(taken)
}
