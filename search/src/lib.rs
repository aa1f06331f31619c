//! Partial-match message search, on Elasticsearch or embedded tantivy.
//!
//! Both backends implement [`SearchIndex`] and follow the same rules:
//! matching ignores case and diacritics, a query word matches a word by
//! prefix or by an infix of at least 3 characters, every query word must
//! match, and a search never leaves its chat. Documents carry the row's
//! `version`, and an index call never replaces a document with an older
//! version, so a late or redelivered index job cannot bring back old text.
//!
//! - [`text`]: the normalisation and n-grams of the embedded backend.
//! - [`tantivy_index`]: the embedded backend, under `DATA_DIR`.
//! - [`elastic`]: the Elasticsearch backend, its mapping and query DSL.
//! - [`maintenance`]: rebuilding an index from the database, and the drift
//!   check that compares per-chat counts.
//! - [`switch`]: an off switch for tests of search outages.
//! - [`unconfigured`]: the answer of a role that has no index to use.
use std::sync::Arc;

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use chat_links::error::Result;
use chat_store::model::MessageRow;

pub mod elastic;
pub mod maintenance;
pub mod switch;
pub mod tantivy_index;
pub mod text;
pub mod unconfigured;

/// A chat, the scope of every search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChatKey {
    pub application_id: i64,
    pub chat_number: i64,
}

impl ChatKey {
    pub fn of(row: &MessageRow) -> Self {
        Self {
            application_id: row.application_id,
            chat_number: row.chat_number,
        }
    }

    /// The keyword both backends scope and count by.
    pub fn term(&self) -> String {
        format!("{}:{}", self.application_id, self.chat_number)
    }
}

/// A message's document id in either backend.
pub fn doc_id(row: &MessageRow) -> String {
    format!("{}:{}:{}", row.application_id, row.chat_number, row.number)
}

/// Where a page of results ends: results are ordered by score, then by
/// number, both descending, and the next page starts strictly after this.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cursor {
    pub score: f32,
    pub number: i64,
}

impl Cursor {
    /// Opaque to clients; the score travels as its bits so it round-trips
    /// exactly.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{:08x}.{}", self.score.to_bits(), self.number))
    }

    /// `None` unless `s` is a cursor a search could have made: a score
    /// that is not a number, or infinite, comes from no search, and
    /// Elasticsearch refuses it as `search_after`.
    pub fn decode(s: &str) -> Option<Cursor> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let (bits, number) = raw.split_once('.')?;
        let score = f32::from_bits(u32::from_str_radix(bits, 16).ok()?);
        score.is_finite().then_some(())?;
        Some(Cursor {
            score,
            number: number.parse().ok()?,
        })
    }

    /// Whether a hit sorts after this cursor.
    pub fn precedes(&self, score: f32, number: i64) -> bool {
        score < self.score || (score == self.score && number < self.number)
    }
}

/// The most words a query may hold. Each word is a clause (a phrase of
/// trigrams on tantivy, a `multi_match` on Elasticsearch), so a query of
/// thousands of words is thousands of clauses.
pub const MAX_QUERY_WORDS: usize = 32;

/// A query's words as the backends count them: the larger of its
/// whitespace-separated words (Elasticsearch's clauses) and its folded
/// words (tantivy's).
pub fn query_word_count(query: &str) -> usize {
    let clauses = query.split_whitespace().count();
    clauses.max(text::words(&text::normalize(query)).len())
}

#[derive(Clone, Debug, Default)]
pub struct SearchPage {
    /// Best match first.
    pub hits: Vec<MessageRow>,
    /// Set when more hits may follow.
    pub next_after: Option<Cursor>,
}

/// Which index a write goes to: the live one that searches read, or a new
/// generation being rebuilt beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Live,
    Generation(String),
}

#[async_trait]
pub trait SearchIndex: Send + Sync + 'static {
    /// "tantivy", "elasticsearch", or "none" ([`unconfigured`]).
    fn kind(&self) -> &'static str;

    /// Whether this process has an index to search and write.
    fn configured(&self) -> bool {
        self.kind() != unconfigured::Unconfigured::KIND
    }

    /// Creates what the live index needs (template, first index, alias)
    /// when it is missing. Cheap when everything exists: it may answer
    /// without asking the server.
    async fn ensure(&self) -> Result<()>;

    /// Answers when the search server does (one small request; always for
    /// an embedded index).
    async fn ping(&self) -> Result<()>;

    /// Indexes the rows, keeping for each message whichever of the stored
    /// and the given document has the higher version.
    async fn index(&self, target: &Target, rows: &[MessageRow]) -> Result<()>;

    /// One page of a chat's messages matching every word of `query`.
    async fn search(
        &self,
        chat: ChatKey,
        query: &str,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<SearchPage>;

    /// How many documents each chat has in the live index, in order.
    async fn counts(&self, chats: &[ChatKey]) -> Result<Vec<u64>>;

    /// The message numbers a chat has in the live index, ascending.
    async fn numbers(&self, chat: ChatKey) -> Result<Vec<i64>>;

    /// Removes these messages of a chat from the live index.
    async fn delete(&self, chat: ChatKey, numbers: &[i64]) -> Result<()>;

    /// Starts a new, empty generation named `name` (replacing an unfinished
    /// one of that name only when `fresh`).
    async fn create_generation(&self, name: &str, fresh: bool) -> Result<()>;

    /// Makes generation `name` the live index, retiring the previous one.
    async fn promote_generation(&self, name: &str) -> Result<()>;
}

/// How to reach the search backend.
#[derive(Clone, Debug)]
pub enum SearchConfig {
    /// tantivy in this directory.
    Embedded { dir: std::path::PathBuf },
    /// Elasticsearch at `url`; `alias` names the live index, and its
    /// generations are `<alias>-<name>`, each created with `shards`
    /// primary shards.
    Elasticsearch {
        url: String,
        alias: String,
        shards: u32,
    },
    /// No index in this process: see [`unconfigured`].
    Unconfigured,
}

pub async fn open(config: &SearchConfig) -> Result<Arc<dyn SearchIndex>> {
    let index: Arc<dyn SearchIndex> = match config {
        SearchConfig::Embedded { dir } => Arc::new(tantivy_index::Tantivy::open(dir)?),
        SearchConfig::Elasticsearch { url, alias, shards } => {
            Arc::new(elastic::Elastic::connect(url, alias, *shards)?)
        }
        SearchConfig::Unconfigured => return Ok(Arc::new(unconfigured::Unconfigured)),
    };
    // An unreachable Elasticsearch must not stop the API or the workers,
    // nor hold their start for long: indexing waits until it returns, and
    // ensure runs again then.
    match tokio::time::timeout(std::time::Duration::from_secs(3), index.ensure()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(backend = index.kind(), error = %e, "search index not ready yet")
        }
        Err(_) => tracing::warn!(
            backend = index.kind(),
            "search index not ready yet: no answer"
        ),
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_words_are_counted_as_each_backend_splits_them() {
        assert_eq!(query_word_count("hello"), 1);
        assert_eq!(query_word_count("hello, wide world"), 3);
        // One whitespace word, three folded words.
        assert_eq!(query_word_count("a.b.c"), 3);
        assert_eq!(query_word_count(&"w ".repeat(40)), 40);
    }

    #[test]
    fn cursors_round_trip_exactly() {
        let c = Cursor {
            score: 0.287_682_1,
            number: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not a cursor"), None);
        for score in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let made_up = Cursor { score, number: 1 }.encode();
            assert_eq!(Cursor::decode(&made_up), None, "{score}");
        }
        assert!(c.precedes(0.1, 99));
        assert!(c.precedes(c.score, 41));
        assert!(!c.precedes(c.score, 42));
    }
}
