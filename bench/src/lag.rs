//! The delay from a 201 to the row being in the table, watched from the
//! database itself so that the API's read path does not add to it.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, Value};

type Key = (i64, i64);

/// Accepted messages not yet seen in the table, and the lags of those seen.
#[derive(Clone, Default)]
pub struct Watch {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    waiting: HashMap<Key, Instant>,
    seen: Vec<Duration>,
}

/// How many chats one lookup asks for; each round looks up every waiting
/// message, in as many lookups as it takes.
const LOOKUP: usize = 200;

impl Watch {
    /// Records that message `number` of chat `chat` got its 201 now.
    pub fn accepted(&self, chat: i64, number: i64) {
        let now = Instant::now();
        self.inner
            .lock()
            .unwrap()
            .waiting
            .insert((chat, number), now);
    }

    /// Polls the table until `until` fires and nothing is waiting, or
    /// `give_up` passes; returns every lag seen, and the mean time of one
    /// round of lookups: a lag is seen up to one round late, so that is
    /// the measurement's resolution.
    pub async fn poll(
        &self,
        db: &DatabaseConnection,
        app_id: i64,
        mut until: tokio::sync::oneshot::Receiver<()>,
        give_up: Duration,
    ) -> anyhow::Result<(Vec<Duration>, Duration)> {
        let (mut rounds, mut round_time) = (0u32, Duration::ZERO);
        let mut sending_done = false;
        let mut deadline = None;
        loop {
            // One range per chat rather than one term per message: the
            // lookup stays small however many messages are waiting.
            let ranges: Vec<(i64, i64, i64)> = {
                let state = self.inner.lock().unwrap();
                let mut by_chat: HashMap<i64, (i64, i64)> = HashMap::new();
                for (chat, number) in state.waiting.keys() {
                    let r = by_chat.entry(*chat).or_insert((*number, *number));
                    r.0 = r.0.min(*number);
                    r.1 = r.1.max(*number);
                }
                by_chat
                    .into_iter()
                    .map(|(c, (lo, hi))| (c, lo, hi))
                    .collect()
            };
            if ranges.is_empty() && sending_done {
                break;
            }
            let round = Instant::now();
            for chunk in ranges.chunks(LOOKUP) {
                let found = present(db, app_id, chunk).await?;
                let seen_at = Instant::now();
                let mut state = self.inner.lock().unwrap();
                for key in found {
                    if let Some(accepted) = state.waiting.remove(&key) {
                        state.seen.push(seen_at - accepted);
                    }
                }
            }
            if !ranges.is_empty() {
                rounds += 1;
                round_time += round.elapsed();
            }
            if !sending_done && until.try_recv().is_ok() {
                sending_done = true;
                deadline = Some(Instant::now() + give_up);
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                let left = self.inner.lock().unwrap().waiting.len();
                anyhow::bail!("{left} accepted messages never reached the table");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let seen = std::mem::take(&mut self.inner.lock().unwrap().seen);
        Ok((seen, round_time / rounds.max(1)))
    }
}

/// The rows present among the given (chat, lowest, highest) number ranges.
/// One `UNION ALL` branch per range, each a primary-key range: written as
/// one `OR`, SQLite searched only on the application and scanned all of its
/// rows (518 ms against 6 ms at 250k rows), which showed as lag.
async fn present(
    db: &DatabaseConnection,
    app_id: i64,
    ranges: &[(i64, i64, i64)],
) -> anyhow::Result<Vec<Key>> {
    let backend = db.get_database_backend();
    // Always LOOKUP branches, the last range repeated: one statement text,
    // prepared once. A text per range count made the connection prepare
    // (and evict) a statement of up to 200 branches most rounds, which
    // delayed the rounds and showed as lag.
    let last = *ranges.last().expect("called with ranges");
    let ranges = ranges
        .iter()
        .chain(std::iter::repeat_n(&last, LOOKUP - ranges.len()));
    let sql = vec![
        "SELECT chat_number, number FROM messages \
         WHERE application_id = ? AND chat_number = ? AND number BETWEEN ? AND ?";
        LOOKUP
    ]
    .join(" UNION ALL ");
    let mut values: Vec<Value> = Vec::with_capacity(LOOKUP * 4);
    for (chat, lo, hi) in ranges {
        values.extend([app_id.into(), (*chat).into(), (*lo).into(), (*hi).into()]);
    }
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get_by_index(0)?, r.try_get_by_index(1)?)))
        .collect()
}
