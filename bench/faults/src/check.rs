//! The check after the load: wait for the system to catch up, then compare
//! what the API lists with what the clients were told, and what the
//! search index holds with what is persisted.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{client::Api, record::Ledger, record::Told, servers::Search};

/// A chat's listed messages: (number, body), in list order.
pub(crate) type Listing = BTreeMap<i64, Vec<(i64, String)>>;

/// Waits until every told write is listed (whatever its body: bodies are
/// the comparison's business). Returns the seconds it took, or `None` if
/// the deadline passed, or nothing moved for `stall` while the messages
/// queue was idle.
pub(crate) async fn wait_listed(
    api: &Api,
    ledger: &Ledger,
    within: Duration,
    stall: Duration,
) -> Option<f64> {
    let start = Instant::now();
    let mut seen: HashSet<(i64, i64)> = HashSet::new();
    let mut best = usize::MAX;
    let mut moved = Instant::now();
    loop {
        // Re-read each round: a probe may still be told something.
        let missing: Vec<(i64, i64)> = ledger.with(|b| {
            b.told
                .iter()
                .map(|t| (t.chat, t.number))
                .filter(|k| !seen.contains(k))
                .collect()
        });
        if missing.is_empty() {
            return Some(start.elapsed().as_secs_f64());
        }
        // Each chat is read from its lowest missing number on: items
        // persist out of order, so a cursor past the highest seen would
        // skip a late one.
        let mut from: BTreeMap<i64, i64> = BTreeMap::new();
        for (chat, number) in &missing {
            let low = from.entry(*chat).or_insert(*number);
            *low = (*low).min(*number);
        }
        for (chat, low) in from {
            if let Ok(items) = api.list_from(chat, low - 1).await {
                seen.extend(items.into_iter().map(|(n, _)| (chat, n)));
            }
        }
        let left = missing.iter().filter(|k| !seen.contains(k)).count();
        if left == 0 {
            return Some(start.elapsed().as_secs_f64());
        }
        if left < best {
            best = left;
            moved = Instant::now();
        }
        if start.elapsed() > within {
            return None;
        }
        if moved.elapsed() > stall && api.backlog("messages").await == Some(0) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) async fn list_everything(api: &Api, chats: &[i64]) -> Result<Listing> {
    let mut out = Listing::new();
    for &chat in chats {
        out.insert(chat, api.list_from(chat, 0).await?);
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Told writes.
    pub accepted: usize,
    /// Messages the list shows, all chats.
    pub listed: usize,
    /// Told writes listed at their number with their body.
    pub persisted: usize,
    /// Extra copies of a body listed more than once.
    pub duplicated: usize,
    /// Told writes whose number is not listed.
    pub lost: usize,
    /// Numbers missing below a chat's highest listed number.
    pub gaps: usize,
    /// Listed messages no client was told about, nor left unresolved.
    pub unexpected: usize,
    /// Told writes whose number is listed with another body.
    pub wrong_body: usize,
    /// Listed messages of writes whose outcome the client never learned:
    /// allowed, the system may have them.
    pub unresolved_listed: usize,
}

/// Exactly once, per chat: every told write listed once, at its number,
/// with its body; numbers 1..N without gaps; nothing else.
pub(crate) fn compare(told: &[Told], unresolved: &[String], listing: &Listing) -> Tally {
    let mut tally = Tally {
        accepted: told.len(),
        ..Tally::default()
    };
    let mut at: HashMap<(i64, i64), &str> = HashMap::new();
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for (chat, items) in listing {
        tally.listed += items.len();
        let numbers: BTreeSet<i64> = items.iter().map(|(n, _)| *n).collect();
        if let Some(&max) = numbers.last() {
            tally.gaps += (max.max(0) as usize).saturating_sub(numbers.len());
        }
        for (number, body) in items {
            at.insert((*chat, *number), body);
            *copies.entry(body).or_default() += 1;
        }
    }
    let told_bodies: HashSet<&str> = told.iter().map(|t| t.body.as_str()).collect();
    let unresolved: HashSet<&str> = unresolved.iter().map(String::as_str).collect();
    for t in told {
        match at.get(&(t.chat, t.number)) {
            Some(body) if *body == t.body => tally.persisted += 1,
            Some(_) => tally.wrong_body += 1,
            None => tally.lost += 1,
        }
    }
    for (body, n) in copies {
        tally.duplicated += n - 1;
        if told_bodies.contains(body) {
            continue;
        }
        if unresolved.contains(body) {
            tally.unresolved_listed += 1;
        } else {
            tally.unexpected += 1;
        }
    }
    tally
}

/// Waits until the search alias counts `target` documents. Returns the
/// last count (`None` if the emulator never answered) and the seconds it
/// took, if it got there.
pub(crate) async fn wait_indexed(
    search: &Search,
    api: &Api,
    alias: &str,
    target: usize,
    within: Duration,
    stall: Duration,
) -> (Option<u64>, Option<f64>) {
    let start = Instant::now();
    let mut last: Option<u64> = None;
    let mut moved = Instant::now();
    loop {
        if let Ok(n) = search.count(alias).await {
            if last != Some(n) {
                moved = Instant::now();
            }
            last = Some(n);
            if n >= target as u64 {
                return (last, Some(start.elapsed().as_secs_f64()));
            }
        }
        if start.elapsed() > within {
            return (last, None);
        }
        if moved.elapsed() > stall && api.backlog("index").await == Some(0) {
            return (last, None);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(chat: i64, number: i64, body: &str) -> Told {
        Told {
            chat,
            number,
            body: body.into(),
            at: 0.0,
        }
    }

    fn listing(chats: &[(i64, &[(i64, &str)])]) -> Listing {
        chats
            .iter()
            .map(|(c, items)| {
                (
                    *c,
                    items.iter().map(|(n, b)| (*n, (*b).to_owned())).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn clean_run_is_all_persisted() {
        let t = [told(1, 1, "a"), told(1, 2, "b"), told(2, 1, "c")];
        let l = listing(&[(1, &[(1, "a"), (2, "b")]), (2, &[(1, "c")])]);
        let tally = compare(&t, &[], &l);
        assert_eq!(
            tally,
            Tally {
                accepted: 3,
                listed: 3,
                persisted: 3,
                ..Tally::default()
            }
        );
    }

    #[test]
    fn a_retry_the_server_did_not_recognise_is_a_duplicate() {
        // The first attempt timed out but was queued as 1; the retry got 2.
        let t = [told(1, 2, "a")];
        let l = listing(&[(1, &[(1, "a"), (2, "a")])]);
        let tally = compare(&t, &[], &l);
        assert_eq!(
            (tally.persisted, tally.duplicated, tally.unexpected),
            (1, 1, 0)
        );
    }

    #[test]
    fn lost_gaps_wrong_and_unexpected_are_told_apart() {
        let t = [told(1, 1, "a"), told(1, 2, "b"), told(1, 4, "d")];
        let l = listing(&[(1, &[(1, "a"), (2, "x"), (5, "e")])]);
        let tally = compare(&t, &["e".into()], &l);
        assert_eq!(tally.persisted, 1);
        assert_eq!(tally.wrong_body, 1);
        assert_eq!(tally.lost, 1);
        assert_eq!(tally.gaps, 2);
        assert_eq!(tally.unexpected, 1, "x was never sent");
        assert_eq!(tally.unresolved_listed, 1, "e was sent, outcome unknown");
    }
}
