//! The embedded search backend: a tantivy index under `DATA_DIR/search`.
//!
//! Each generation of the index is a directory; the file `CURRENT` names the
//! live one. A rebuild fills a new generation, then replaces `CURRENT`
//! atomically. tantivy allows one writer per index across processes, so a
//! rebuild must run while no server holds the live index (see `chat
//! reindex`).
//!
//! Text is indexed pre-tokenised, as the terms of [`super::text`], and a
//! query is one required term per query word: the n-grams already encode
//! prefix and infix matching, so no query-time expansion is needed.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use async_trait::async_trait;
use chrono::DateTime;
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, SegmentReader,
    TantivyDocument, Term,
    collector::{Count, DocSetCollector, TopDocs},
    directory::MmapDirectory,
    query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery},
    schema::{
        FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
        TextOptions, Value,
    },
    tokenizer::{PreTokenizedString, Token},
};

use super::{ChatKey, Cursor, SearchIndex, SearchPage, Target, doc_id, text};
use crate::{
    error::{Result, StoreError},
    model::MessageRow,
};

/// Indexing memory of the one writer thread; tantivy flushes a segment when
/// it fills.
const WRITER_BUDGET: usize = 64 * 1024 * 1024;
const FIRST_GENERATION: &str = "g1";

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    chat: Field,
    grams: Field,
    application_id: Field,
    chat_number: Field,
    number: Field,
    version: Field,
    body: Field,
    created_at: Field,
    updated_at: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let grams = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("raw")
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        id: b.add_text_field("id", STRING),
        chat: b.add_text_field("chat", STRING),
        grams: b.add_text_field("grams", grams),
        application_id: b.add_i64_field("application_id", STORED),
        chat_number: b.add_i64_field("chat_number", STORED),
        number: b.add_i64_field("number", STORED | FAST | INDEXED),
        version: b.add_i64_field("version", STORED | FAST),
        body: b.add_text_field("body", STORED),
        created_at: b.add_i64_field("created_at", STORED),
        updated_at: b.add_i64_field("updated_at", STORED),
    };
    (b.build(), fields)
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Search(e.to_string())
}

/// One index directory, with its reader and (once something is written)
/// its writer.
struct Generation {
    index: Index,
    reader: IndexReader,
    writer: Mutex<Option<IndexWriter>>,
}

impl Generation {
    fn open(path: &Path, schema: Schema) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(err)?;
        let index =
            Index::open_or_create(MmapDirectory::open(path).map_err(err)?, schema).map_err(err)?;
        let reader = index
            .reader_builder()
            // Picks up commits made by another process (a worker role
            // writing while this one serves searches).
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()
            .map_err(err)?;
        Ok(Self {
            index,
            reader,
            writer: Mutex::new(None),
        })
    }

    /// Runs `f` with this process's writer, taking the index's write lock
    /// on first use; then commits and makes the commit visible here.
    fn write(&self, f: impl FnOnce(&IndexWriter, &Searcher) -> Result<()>) -> Result<()> {
        let mut guard = self.writer.lock().unwrap();
        if guard.is_none() {
            let writer = self
                .index
                .writer_with_num_threads(1, WRITER_BUDGET)
                .map_err(|e| {
                    StoreError::Search(format!(
                        "cannot write the search index ({e}); is another process holding it?"
                    ))
                })?;
            *guard = Some(writer);
        }
        let writer = guard.as_mut().expect("just set");
        self.reader.reload().map_err(err)?;
        let searcher = self.reader.searcher();
        if let Err(e) = f(writer, &searcher) {
            writer.rollback().map_err(err)?;
            return Err(e);
        }
        writer.commit().map_err(err)?;
        self.reader.reload().map_err(err)?;
        Ok(())
    }
}

pub struct TantivyIndex {
    dir: PathBuf,
    schema: Schema,
    fields: Fields,
    live: RwLock<Arc<Generation>>,
    building: Mutex<HashMap<String, Arc<Generation>>>,
}

impl TantivyIndex {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let (schema, fields) = schema();
        let current = std::fs::read_to_string(dir.join("CURRENT"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| FIRST_GENERATION.to_owned());
        let live = Generation::open(&dir.join(&current), schema.clone())?;
        Ok(Self {
            dir: dir.to_owned(),
            schema,
            fields,
            live: RwLock::new(Arc::new(live)),
            building: Mutex::new(HashMap::new()),
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
        let tokens = text::index_terms(&row.body)
            .into_iter()
            .enumerate()
            .map(|(position, text)| Token {
                position,
                text,
                ..Token::default()
            })
            .collect();
        doc.add_pre_tokenized_text(
            f.grams,
            PreTokenizedString {
                text: String::new(),
                tokens,
            },
        );
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
        let query = TermQuery::new(
            Term::from_field_text(self.fields.id, id),
            IndexRecordOption::Basic,
        );
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
                if self
                    .stored_version(searcher, id)?
                    .is_some_and(|stored| stored >= row.version)
                {
                    continue;
                }
                writer.delete_term(Term::from_field_text(self.fields.id, id));
                writer.add_document(self.document(row)).map_err(err)?;
            }
            Ok(())
        })
    }

    fn search_blocking(
        &self,
        chat: ChatKey,
        query: &str,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<SearchPage> {
        let terms = text::query_terms(query);
        if terms.is_empty() || limit == 0 {
            return Ok(SearchPage::default());
        }
        // The chat only filters: scoring it would add the same constant to
        // every hit.
        let in_chat = TermQuery::new(
            Term::from_field_text(self.fields.chat, &chat.term()),
            IndexRecordOption::Basic,
        );
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Must,
            Box::new(ConstScoreQuery::new(Box::new(in_chat), 0.0)),
        )];
        for term in &terms {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.grams, term),
                    IndexRecordOption::WithFreqs,
                )),
            ));
        }
        let query = BooleanQuery::new(clauses);
        let collector =
            TopDocs::with_limit(limit + 1).tweak_score(move |segment: &SegmentReader| {
                let numbers = segment.fast_fields().i64("number").ok();
                move |doc, score| {
                    let number = numbers.as_ref().and_then(|c| c.first(doc)).unwrap_or(0);
                    match after {
                        Some(c) if !c.precedes(score, number) => (f32::NEG_INFINITY, i64::MIN),
                        _ => (score, number),
                    }
                }
            });
        let searcher = self.live().reader.searcher();
        let top: Vec<((f32, i64), DocAddress)> =
            searcher.search(&query, &collector).map_err(err)?;
        let mut page = SearchPage::default();
        let mut last = None;
        for ((score, number), addr) in top {
            if score == f32::NEG_INFINITY && number == i64::MIN {
                continue;
            }
            if page.hits.len() == limit {
                page.next_after = last;
                break;
            }
            let doc: TantivyDocument = searcher.doc(addr).map_err(err)?;
            page.hits.extend(self.row(&doc));
            last = Some(Cursor { score, number });
        }
        Ok(page)
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

    async fn ensure(&self) -> Result<()> {
        Ok(())
    }

    async fn index(&self, target: &Target, rows: &[MessageRow]) -> Result<()> {
        let (target, rows) = (target.clone(), rows.to_vec());
        blocking(&self.0, move |i| i.index_blocking(&target, &rows)).await
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
            let generation = Generation::open(&path, i.schema.clone())?;
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
            let tmp = i.dir.join("CURRENT.tmp");
            std::fs::write(&tmp, &name).map_err(err)?;
            std::fs::rename(&tmp, i.dir.join("CURRENT")).map_err(err)?;
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

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
