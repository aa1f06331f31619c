//! The embedded search backend: a tantivy index under `DATA_DIR/search`.
//!
//! Each generation of the index is a directory; the file `CURRENT` names the
//! live one. A rebuild fills a new generation, then replaces `CURRENT`
//! atomically. tantivy allows one writer per index across processes, and
//! a rebuild deletes the generations it retires, so one process at a time
//! owns the directory: opening it takes an exclusive lock on `owner.lock`,
//! held for the life of the process, and a second opener (`chat reindex`
//! while `chat serve` runs) is refused with a clear error.
//!
//! Text is indexed as the prefix and trigram terms of [`super::text`], with
//! positions, through a tokenizer of our own; each query word is one required clause:
//! a prefix term, or the phrase of its trigrams.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

mod generation;
mod merges;
mod query;
mod schema;

use generation::{FIRST_GENERATION, Generation, write_current};
use schema::{Fields, TERMS_TOKENIZER, TermsTokenizer, schema};

use async_trait::async_trait;
use chrono::DateTime;
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, SegmentReader,
    TantivyDocument, Term,
    collector::{Count, DocSetCollector, TopDocs},
    directory::MmapDirectory,
    query::{BooleanQuery, ConstScoreQuery, Occur, PhraseQuery, Query, TermQuery},
    schema::{
        FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
        TextOptions, Value,
    },
    tokenizer::{TextAnalyzer, Token, TokenStream, Tokenizer},
};

use super::{
    ChatKey, Cursor, SearchIndex, SearchPage, Target, doc_id,
    text::{self, WordQuery},
};
use chat_links::error::{Result, StoreError};
use chat_store::model::MessageRow;

/// Indexing memory of the one writer thread; tantivy flushes a segment when
/// it fills.
const WRITER_BUDGET: usize = 64 * 1024 * 1024;

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Search(e.to_string())
}

pub struct TantivyIndex {
    dir: PathBuf,
    schema: Schema,
    fields: Fields,
    live: RwLock<Arc<Generation>>,
    building: Mutex<HashMap<String, Arc<Generation>>>,
    /// Holds the directory's lock until the process ends.
    _owner: std::fs::File,
}

/// Takes the directory's exclusive lock, or says who must let go of it.
fn own(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("owner.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(err)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Other(format!(
            "the search index in {} is in use by another process (a running `chat serve`?); \
             stop it first: an embedded index has one owner at a time",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(err(e)),
    }
}

impl TantivyIndex {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let owner = own(dir)?;
        let (schema, fields) = schema();
        let current = std::fs::read_to_string(dir.join("CURRENT"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| FIRST_GENERATION.to_owned());
        let live = match Generation::open(&dir.join(&current), schema.clone())? {
            Some(live) => live,
            None => {
                tracing::warn!(
                    old = %current,
                    new = FIRST_GENERATION,
                    "the search index was built by another version; searching a new, empty \
                     one until `chat reindex` fills it"
                );
                let live = Generation::open_fresh(&dir.join(FIRST_GENERATION), schema.clone())?;
                write_current(dir, FIRST_GENERATION)?;
                live
            }
        };
        Ok(Self {
            dir: dir.to_owned(),
            schema,
            fields,
            live: RwLock::new(Arc::new(live)),
            building: Mutex::new(HashMap::new()),
            _owner: owner,
        })
    }

    fn live(&self) -> Arc<Generation> {
        self.live.read().unwrap().clone()
    }

    fn generation(&self, target: &Target) -> Result<Arc<Generation>> {
        match target {
            Target::Live => Ok(self.live()),
            Target::Generation(name) => self
                .building
                .lock()
                .unwrap()
                .get(name)
                .cloned()
                .ok_or_else(|| StoreError::Search(format!("generation {name} was not created"))),
        }
    }

    fn document(&self, row: &MessageRow) -> TantivyDocument {
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, doc_id(row));
        doc.add_text(f.chat, ChatKey::of(row).term());
        doc.add_text(f.grams, &row.body);
        doc.add_i64(f.application_id, row.application_id);
        doc.add_i64(f.chat_number, row.chat_number);
        doc.add_i64(f.number, row.number);
        doc.add_i64(f.version, row.version);
        doc.add_text(f.body, &row.body);
        doc.add_i64(f.created_at, row.created_at.timestamp_micros());
        doc.add_i64(f.updated_at, row.updated_at.timestamp_micros());
        doc
    }

    fn row(&self, doc: &TantivyDocument) -> Option<MessageRow> {
        let f = &self.fields;
        let int = |field| doc.get_first(field).and_then(|v| v.as_i64());
        Some(MessageRow {
            application_id: int(f.application_id)?,
            chat_number: int(f.chat_number)?,
            number: int(f.number)?,
            body: doc.get_first(f.body)?.as_str()?.to_owned(),
            version: int(f.version)?,
            created_at: DateTime::from_timestamp_micros(int(f.created_at)?)?,
            updated_at: DateTime::from_timestamp_micros(int(f.updated_at)?)?,
        })
    }

    /// The stored version of a document, if the index has it.
    fn stored_version(&self, searcher: &Searcher, id: &str) -> Result<Option<i64>> {
        let term = Term::from_field_text(self.fields.id, id);
        // Most documents are new: a term-dictionary lookup settles those
        // without running a query.
        if searcher.doc_freq(&term).map_err(err)? == 0 {
            return Ok(None);
        }
        let query = TermQuery::new(term, IndexRecordOption::Basic);
        let top = searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())
            .map_err(err)?;
        let Some((_, addr)) = top.first() else {
            return Ok(None);
        };
        let versions = searcher
            .segment_reader(addr.segment_ord)
            .fast_fields()
            .i64("version")
            .map_err(err)?;
        Ok(versions.first(addr.doc_id))
    }

    fn index_blocking(&self, target: &Target, rows: &[MessageRow]) -> Result<()> {
        let generation = self.generation(target)?;
        let mut newest: HashMap<String, &MessageRow> = HashMap::with_capacity(rows.len());
        for row in rows {
            let entry = newest.entry(doc_id(row)).or_insert(row);
            if row.version > entry.version {
                *entry = row;
            }
        }
        generation.write(|writer, searcher| {
            for (id, row) in &newest {
                match self.stored_version(searcher, id)? {
                    Some(stored) if stored >= row.version => continue,
                    // A delete is applied at commit by a term lookup in
                    // every segment; most documents are new and need none.
                    // Nothing uncommitted can hold the id: a writer that
                    // could not commit or roll back is dropped.
                    Some(_) => {
                        writer.delete_term(Term::from_field_text(self.fields.id, id));
                    }
                    None => {}
                }
                writer.add_document(self.document(row)).map_err(err)?;
            }
            Ok(())
        })
    }

    fn counts_blocking(&self, chats: &[ChatKey]) -> Result<Vec<u64>> {
        let searcher = self.live().reader.searcher();
        chats
            .iter()
            .map(|chat| {
                let query = TermQuery::new(
                    Term::from_field_text(self.fields.chat, &chat.term()),
                    IndexRecordOption::Basic,
                );
                searcher
                    .search(&query, &Count)
                    .map(|n| n as u64)
                    .map_err(err)
            })
            .collect()
    }
}

/// Runs blocking index work off the async workers.
async fn blocking<T: Send + 'static>(
    index: &Arc<TantivyIndex>,
    f: impl FnOnce(&TantivyIndex) -> Result<T> + Send + 'static,
) -> Result<T> {
    let index = index.clone();
    tokio::task::spawn_blocking(move || f(&index))
        .await
        .map_err(err)?
}

/// The trait is implemented on a shared handle so blocking calls can move a
/// clone onto the blocking pool.
#[derive(Clone)]
pub struct Tantivy(Arc<TantivyIndex>);

impl Tantivy {
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self(Arc::new(TantivyIndex::open(dir)?)))
    }
}

#[async_trait]
impl SearchIndex for Tantivy {
    fn kind(&self) -> &'static str {
        "tantivy"
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn ensure(&self) -> Result<()> {
        Ok(())
    }

    async fn index(&self, target: &Target, rows: &[MessageRow]) -> Result<()> {
        // The embedded counterpart of Elasticsearch's `_bulk` span.
        let span = tracing::info_span!(
            "index tantivy",
            otel.kind = "internal",
            db.system.name = "tantivy",
            db.operation.batch.size = rows.len() as i64,
        );
        let (target, rows) = (target.clone(), rows.to_vec());
        tracing::Instrument::instrument(
            blocking(&self.0, move |i| i.index_blocking(&target, &rows)),
            span,
        )
        .await
    }

    async fn search(
        &self,
        chat: ChatKey,
        query: &str,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<SearchPage> {
        let query = query.to_owned();
        blocking(&self.0, move |i| {
            i.search_blocking(chat, &query, limit, after)
        })
        .await
    }

    async fn counts(&self, chats: &[ChatKey]) -> Result<Vec<u64>> {
        let chats = chats.to_vec();
        blocking(&self.0, move |i| i.counts_blocking(&chats)).await
    }

    async fn numbers(&self, chat: ChatKey) -> Result<Vec<i64>> {
        blocking(&self.0, move |i| {
            let searcher = i.live().reader.searcher();
            let query = TermQuery::new(
                Term::from_field_text(i.fields.chat, &chat.term()),
                IndexRecordOption::Basic,
            );
            let docs = searcher.search(&query, &DocSetCollector).map_err(err)?;
            let mut numbers = Vec::with_capacity(docs.len());
            for addr in docs {
                let column = searcher
                    .segment_reader(addr.segment_ord)
                    .fast_fields()
                    .i64("number")
                    .map_err(err)?;
                numbers.extend(column.first(addr.doc_id));
            }
            numbers.sort_unstable();
            Ok(numbers)
        })
        .await
    }

    async fn delete(&self, chat: ChatKey, numbers: &[i64]) -> Result<()> {
        let numbers = numbers.to_vec();
        blocking(&self.0, move |i| {
            i.live().write(|writer, _| {
                for number in numbers {
                    let id = format!("{}:{number}", chat.term());
                    writer.delete_term(Term::from_field_text(i.fields.id, &id));
                }
                Ok(())
            })
        })
        .await
    }

    async fn create_generation(&self, name: &str, fresh: bool) -> Result<()> {
        let name = name.to_owned();
        blocking(&self.0, move |i| {
            let path = i.dir.join(&name);
            if fresh && path.exists() {
                std::fs::remove_dir_all(&path).map_err(err)?;
            }
            let generation = Generation::open_fresh(&path, i.schema.clone())?;
            i.building
                .lock()
                .unwrap()
                .insert(name, Arc::new(generation));
            Ok(())
        })
        .await
    }

    async fn promote_generation(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        blocking(&self.0, move |i| {
            let generation = i.generation(&Target::Generation(name.clone()))?;
            write_current(&i.dir, &name)?;
            let old = std::mem::replace(&mut *i.live.write().unwrap(), generation);
            i.building.lock().unwrap().remove(&name);
            // The old generation's files go once nothing here uses them.
            let old_dir = std::fs::read_dir(&i.dir)
                .map_err(err)?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != name.as_str()));
            let stale: Vec<PathBuf> = old_dir.collect();
            drop(old);
            for dir in stale {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove an old search generation");
                }
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests;
