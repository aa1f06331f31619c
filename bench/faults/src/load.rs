//! The writing clients, and the retry discipline every write follows.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::task::JoinHandle;

use crate::{
    client::{Api, Attempt},
    flag::Flag,
    record::{Failure, Ledger, Told},
};

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(crate) enum Outcome {
    Told(i64),
    Rejected,
    Unresolved,
}

/// One intended write, retried with the same key and body until a 2xx or
/// a final 4xx: what a careful client does when it cannot tell whether
/// the server got its request. Attempts go to the API processes in turn,
/// as a load balancer would send them. `give_up` ends the retrying; the
/// write is then unresolved.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write(
    api: &Api,
    ledger: &Ledger,
    t0: Instant,
    chat: i64,
    body: String,
    seq: u64,
    first_api: usize,
    give_up: &Flag,
) -> Outcome {
    let key = uuid::Uuid::new_v4();
    // The draft's key is a structured-field string (quoted); clients in
    // the wild send it bare too. The server must take both.
    let key = if seq.is_multiple_of(2) {
        format!("\"{key}\"")
    } else {
        key.to_string()
    };
    let mut backoff = BACKOFF_FIRST;
    let mut attempt = 0usize;
    loop {
        let target = first_api + attempt;
        let result = api.post_message(target, chat, &body, &key).await;
        let at = t0.elapsed().as_secs_f64();
        match result {
            Attempt::Created(number) => {
                ledger.with(|b| {
                    if attempt == 0 {
                        b.first_try += 1;
                    } else {
                        b.retried_ok += 1;
                    }
                    b.told.push(Told {
                        chat,
                        number,
                        body,
                        at,
                    });
                });
                return Outcome::Told(number);
            }
            Attempt::Rejected(status, text) => {
                ledger.with(|b| b.rejected.push((status, text)));
                return Outcome::Rejected;
            }
            Attempt::Retry(class) => ledger.with(|b| {
                b.failures.push(Failure {
                    at,
                    class,
                    api: target % api.apis(),
                })
            }),
        }
        attempt += 1;
        if give_up.is_set() {
            ledger.with(|b| b.unresolved.push(body));
            return Outcome::Unresolved;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = give_up.wait() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

pub(crate) struct Load {
    pub api: Arc<Api>,
    pub ledger: Arc<Ledger>,
    pub chats: Arc<Vec<i64>>,
    pub clients: usize,
    pub target: Option<usize>,
    pub max_rate: Option<f64>,
    pub run_id: String,
    pub t0: Instant,
    /// No new writes once set.
    pub stop: Flag,
    /// Set by the client that takes the last write of the target.
    pub target_reached: Flag,
    /// Writes still retrying give up once set.
    pub abandon: Flag,
}

/// Starts the clients; each ends when the load stops (after settling the
/// write it holds) or the target is reached.
pub(crate) fn spawn_clients(load: Arc<Load>) -> Vec<JoinHandle<()>> {
    let intended = Arc::new(AtomicUsize::new(0));
    (0..load.clients)
        .map(|client| {
            let load = load.clone();
            let intended = intended.clone();
            tokio::spawn(async move { client_loop(&load, client, &intended).await })
        })
        .collect()
}

async fn client_loop(load: &Load, client: usize, intended: &AtomicUsize) {
    let mut rng = StdRng::seed_from_u64(client as u64);
    // Each client takes its share of the rate, offset from the others so
    // the writes do not arrive in bursts.
    let interval = load
        .max_rate
        .map(|rate| Duration::from_secs_f64(load.clients as f64 / rate));
    let mut next =
        Instant::now() + interval.unwrap_or_default() * client as u32 / load.clients as u32;
    for seq in 0u64.. {
        if load.stop.is_set() {
            return;
        }
        if let Some(target) = load.target {
            let n = intended.fetch_add(1, Ordering::Relaxed);
            if n >= target {
                return;
            }
            if n + 1 == target {
                load.target_reached.set();
            }
        }
        if let Some(interval) = interval {
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = load.stop.wait() => return,
            }
            // After a long stall, resume the pace instead of catching up
            // with a burst.
            next = (next + interval).max(Instant::now());
        }
        load.ledger.with(|b| b.intended += 1);
        let chat = load.chats[rng.random_range(0..load.chats.len())];
        let body = format!("{} c{client} s{seq}", load.run_id);
        write(
            &load.api,
            &load.ledger,
            load.t0,
            chat,
            body,
            seq,
            client + seq as usize,
            &load.abandon,
        )
        .await;
    }
}
