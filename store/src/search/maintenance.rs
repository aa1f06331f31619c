//! Keeping the index equal to the database: a full rebuild, and a drift
//! check that compares per-chat counts and repairs the chats that differ.
//!
//! Both only ever index rows as the database has them now, with their
//! versions, so they can run beside live indexing: whichever write carries
//! the newer version wins in either order.
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use super::{ChatKey, SearchIndex, Target};
use crate::{error::Result, repo};

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
            let started_at = crate::now_millis();
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
        vec![crate::now_millis().into(), cp.generation.clone().into()],
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

/// A chat whose index count differed from the database's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatDrift {
    pub chat: ChatKey,
    pub in_database: u64,
    pub in_index: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriftReport {
    pub chats_checked: u64,
    pub drifted: Vec<ChatDrift>,
    /// Chats re-sent to the index.
    pub repaired: u64,
}

/// Compares every chat's message count in the database with the index's,
/// and (when `repair`) re-sends the chats that differ. A chat's messages
/// persisted but not yet indexed also count as drift; re-sending them is
/// harmless.
pub async fn check_drift(
    db: &DatabaseConnection,
    search: &dyn SearchIndex,
    repair: bool,
) -> Result<DriftReport> {
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
            if in_index != in_database {
                report.drifted.push(ChatDrift {
                    chat,
                    in_database,
                    in_index,
                });
            }
        }
    }
    if repair {
        for drift in &report.drifted {
            let persisted = resend_chat(db, search, drift.chat).await?;
            // More documents than rows: the index has messages the database
            // does not (a restored backup); remove just those.
            if drift.in_index > drift.in_database {
                let extra: Vec<i64> = search
                    .numbers(drift.chat)
                    .await?
                    .into_iter()
                    .filter(|n| persisted.binary_search(n).is_err())
                    .collect();
                search.delete(drift.chat, &extra).await?;
            }
            report.repaired += 1;
        }
    }
    Ok(report)
}

/// Indexes every persisted message of a chat again; returns their numbers,
/// ascending.
async fn resend_chat(
    db: &DatabaseConnection,
    search: &dyn SearchIndex,
    chat: ChatKey,
) -> Result<Vec<i64>> {
    let mut numbers = Vec::new();
    let mut after = 0;
    loop {
        let rows =
            repo::messages::of_chat(db, chat.application_id, chat.chat_number, after, STEP).await?;
        let Some(last) = rows.last() else {
            return Ok(numbers);
        };
        after = last.number;
        numbers.extend(rows.iter().map(|r| r.number));
        search.index(&Target::Live, &rows).await?;
    }
}
