//! Keeping the index equal to the database: a full rebuild, and a drift
//! check that compares per-chat counts and repairs the chats that differ.
//!
//! Both only ever index rows as the database has them now, with their
//! versions, so they can run beside live indexing: whichever write carries
//! the newer version wins in either order.
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use super::{ChatKey, SearchIndex, Target};
use chat_links::error::Result;
use chat_store::repo;

/// Rows read and indexed per step.
const STEP: u64 = 2_000;
/// Chats whose counts are compared per request.
const CHATS_PER_CHECK: usize = 1_000;
/// Writes accepted shortly before a rebuild started may commit, and be
/// indexed into the old generation, after the scan passed them. Rows
/// updated this long before the start are indexed again at the end.
const CATCH_UP_MARGIN: Duration = Duration::from_secs(300);

/// How a rebuild is going, for progress bars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub indexed: u64,
    /// The table's size when the rebuild (or this resumption) started.
    pub total: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildReport {
    pub generation: String,
    pub resumed: bool,
    pub indexed: u64,
}

struct Checkpoint {
    generation: String,
    last_id: i64,
    indexed: u64,
    started_at: i64,
}

async fn unfinished(db: &DatabaseConnection) -> Result<Option<Checkpoint>> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT generation, last_message_id, indexed, started_at FROM search_rebuilds \
             WHERE finished_at IS NULL ORDER BY started_at DESC LIMIT 1",
        ))
        .await?;
    Ok(match row {
        Some(r) => Some(Checkpoint {
            generation: r.try_get("", "generation")?,
            last_id: r.try_get("", "last_message_id")?,
            indexed: r.try_get::<i64>("", "indexed")? as u64,
            started_at: r.try_get("", "started_at")?,
        }),
        None => None,
    })
}

async fn exec(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) -> Result<()> {
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        sql,
        values,
    ))
    .await?;
    Ok(())
}

/// Rebuilds the search index from the database into a new generation and
/// swaps it in. An interrupted rebuild is resumed from its checkpoint by
/// the next call, unless `restart`.
pub async fn rebuild(
    db: &DatabaseConnection,
    search: &dyn SearchIndex,
    restart: bool,
    mut progress: impl FnMut(Progress),
) -> Result<RebuildReport> {
    let previous = if restart { None } else { unfinished(db).await? };
    let resumed = previous.is_some();
    let mut cp = match previous {
        Some(cp) => {
            search.create_generation(&cp.generation, false).await?;
            cp
        }
        None => {
            let started_at = chat_links::now_millis();
            let cp = Checkpoint {
                generation: format!("g{started_at}"),
                last_id: 0,
                indexed: 0,
                started_at,
            };
            search.create_generation(&cp.generation, true).await?;
            exec(
                db,
                "INSERT INTO search_rebuilds (generation, last_message_id, indexed, started_at) \
                 VALUES (?, 0, 0, ?)",
                vec![cp.generation.clone().into(), started_at.into()],
            )
            .await?;
            cp
        }
    };
    let target = Target::Generation(cp.generation.clone());
    let total = repo::messages::total(db).await?.max(cp.indexed);
    progress(Progress {
        indexed: cp.indexed,
        total,
    });
    loop {
        let rows = repo::messages::scan(db, None, cp.last_id, STEP).await?;
        let Some(&(last_id, _)) = rows.last() else {
            break;
        };
        let rows: Vec<_> = rows.into_iter().map(|(_, r)| r).collect();
        search.index(&target, &rows).await?;
        cp.last_id = last_id;
        cp.indexed += rows.len() as u64;
        exec(
            db,
            "UPDATE search_rebuilds SET last_message_id = ?, indexed = ? WHERE generation = ?",
            vec![
                cp.last_id.into(),
                (cp.indexed as i64).into(),
                cp.generation.clone().into(),
            ],
        )
        .await?;
        progress(Progress {
            indexed: cp.indexed,
            total: total.max(cp.indexed),
        });
    }
    let since = chrono::DateTime::from_timestamp_millis(cp.started_at).unwrap_or_default()
        - CATCH_UP_MARGIN;
    catch_up(db, search, &target, since).await?;
    search.promote_generation(&cp.generation).await?;
    // Live writes that went to the old generation between the catch-up and
    // the swap land in the new one now.
    catch_up(db, search, &Target::Live, since).await?;
    exec(
        db,
        "UPDATE search_rebuilds SET finished_at = ? WHERE generation = ?",
        vec![
            chat_links::now_millis().into(),
            cp.generation.clone().into(),
        ],
    )
    .await?;
    Ok(RebuildReport {
        generation: cp.generation,
        resumed,
        indexed: cp.indexed,
    })
}

async fn catch_up(
    db: &DatabaseConnection,
    search: &dyn SearchIndex,
    target: &Target,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let mut after = 0;
    loop {
        let rows = repo::messages::scan(db, Some(since), after, STEP).await?;
        let Some(&(last, _)) = rows.last() else {
            return Ok(());
        };
        after = last;
        let rows: Vec<_> = rows.into_iter().map(|(_, r)| r).collect();
        search.index(target, &rows).await?;
    }
}

/// A chat whose index holds other messages than the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatDrift {
    pub chat: ChatKey,
    pub in_database: u64,
    pub in_index: u64,
    /// Persisted messages the index lacks (beyond the settling time).
    pub missing: u64,
    /// Documents of messages the database does not have.
    pub extra: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriftReport {
    pub chats_checked: u64,
    pub drifted: Vec<ChatDrift>,
    /// Drifted chats repaired.
    pub repaired: u64,
    /// Messages indexed again: only the missing ones, never a whole chat.
    pub resent: u64,
    /// Documents removed, of messages the database does not have.
    pub removed: u64,
}

/// Compares every chat's messages in the database with the index's, and
/// (when `repair`) indexes just the missing ones and removes just the
/// extra documents.
///
/// Counts only pick the chats to look at: a chat whose counts differ is
/// compared number by number, reading the index before the database.
/// Messages are never deleted from the database, and a message is indexed
/// only after it is persisted, so a number the index has and the database
/// read after it lacks is a real extra document, whatever is written
/// meanwhile. A message persisted less than `settle` ago is still on its
/// way through the index queue, not missing: on a busy system the
/// scheduled check leaves it to its job instead of re-sending every active
/// chat; an operator's `chat reindex --check` passes zero.
pub async fn check_drift(
    db: &DatabaseConnection,
    search: &dyn SearchIndex,
    repair: bool,
    settle: Duration,
) -> Result<DriftReport> {
    let settled_before = chrono::Utc::now() - settle;
    let counts = repo::messages::counts_per_chat(db).await?;
    let mut report = DriftReport::default();
    for chunk in counts.chunks(CHATS_PER_CHECK) {
        let chats: Vec<ChatKey> = chunk
            .iter()
            .map(|&((application_id, chat_number), _)| ChatKey {
                application_id,
                chat_number,
            })
            .collect();
        let indexed = search.counts(&chats).await?;
        report.chats_checked += chats.len() as u64;
        for ((chat, &(_, in_database)), in_index) in chats.into_iter().zip(chunk).zip(indexed) {
            if in_index == in_database {
                continue;
            }
            let Some(drift) = compare(db, search, chat, settled_before).await? else {
                continue;
            };
            if repair {
                report.resent += drift.missing.len() as u64;
                report.removed += drift.extra.len() as u64;
                repair_chat(db, search, chat, &drift).await?;
                report.repaired += 1;
            }
            report.drifted.push(ChatDrift {
                chat,
                in_database: drift.in_database,
                in_index: drift.in_index,
                missing: drift.missing.len() as u64,
                extra: drift.extra.len() as u64,
            });
        }
    }
    Ok(report)
}

/// What one chat's number-by-number comparison found.
struct Difference {
    in_database: u64,
    in_index: u64,
    missing: Vec<i64>,
    extra: Vec<i64>,
}

/// `None` when the chat differs only by messages still settling.
async fn compare(
    db: &DatabaseConnection,
    search: &dyn SearchIndex,
    chat: ChatKey,
    settled_before: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Difference>> {
    // The index first: see `check_drift`.
    let in_index = search.numbers(chat).await?;
    let in_database =
        repo::messages::numbers_of_chat(db, chat.application_id, chat.chat_number).await?;
    let missing: Vec<i64> = in_database
        .iter()
        .filter(|(n, written)| *written < settled_before && in_index.binary_search(n).is_err())
        .map(|&(n, _)| n)
        .collect();
    let extra: Vec<i64> = in_index
        .iter()
        .copied()
        .filter(|n| in_database.binary_search_by_key(n, |&(m, _)| m).is_err())
        .collect();
    Ok(
        (!missing.is_empty() || !extra.is_empty()).then_some(Difference {
            in_database: in_database.len() as u64,
            in_index: in_index.len() as u64,
            missing,
            extra,
        }),
    )
}

async fn repair_chat(
    db: &DatabaseConnection,
    search: &dyn SearchIndex,
    chat: ChatKey,
    drift: &Difference,
) -> Result<()> {
    for numbers in drift.missing.chunks(STEP as usize) {
        let rows = repo::messages::with_numbers(db, chat.application_id, chat.chat_number, numbers)
            .await?;
        search.index(&Target::Live, &rows).await?;
    }
    if !drift.extra.is_empty() {
        search.delete(chat, &drift.extra).await?;
    }
    Ok(())
}
