//! One generation of the index: a directory, opened or made fresh, and
//! written under one writer; `CURRENT` names the live one.
use super::{merges::BoundedMerges, *};

/// The generation a process starts when there is none, or when the live
/// one was built with another schema. Named after the schema, so every
/// process of a deployment picks the same one; bump it with the schema.
pub(super) const FIRST_GENERATION: &str = "s2";

/// One index directory, with its reader and (once something is written)
/// its writer.
pub(super) struct Generation {
    pub(super) index: Index,
    pub(super) reader: IndexReader,
    pub(super) writer: Mutex<Option<IndexWriter>>,
}

impl Generation {
    /// `None` when the directory holds an index of another schema.
    pub(super) fn open(path: &Path, schema: Schema) -> Result<Option<Self>> {
        std::fs::create_dir_all(path).map_err(err)?;
        let index = match Index::open_or_create(MmapDirectory::open(path).map_err(err)?, schema) {
            Ok(index) => index,
            Err(tantivy::TantivyError::SchemaError(_)) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        index
            .tokenizers()
            .register(TERMS_TOKENIZER, TextAnalyzer::from(TermsTokenizer));
        let reader = index
            .reader_builder()
            // Picks up commits made by another process (a worker role
            // writing while this one serves searches).
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()
            .map_err(err)?;
        Ok(Some(Self {
            index,
            reader,
            writer: Mutex::new(None),
        }))
    }

    pub(super) fn open_fresh(path: &Path, schema: Schema) -> Result<Self> {
        Self::open(path, schema)?.ok_or_else(|| {
            StoreError::Search(format!(
                "{} holds an index of another schema",
                path.display()
            ))
        })
    }

    /// Runs `f` with this process's writer, taking the index's write lock
    /// on first use; then commits and makes the commit visible here.
    pub(super) fn write(
        &self,
        f: impl FnOnce(&IndexWriter, &Searcher) -> Result<()>,
    ) -> Result<()> {
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
            writer.set_merge_policy(Box::new(BoundedMerges::default()));
            *guard = Some(writer);
        }
        let writer = guard.as_mut().expect("just set");
        self.reader.reload().map_err(err)?;
        let searcher = self.reader.searcher();
        let outcome = f(writer, &searcher);
        let settled = match outcome {
            Ok(()) => writer.commit().map(drop),
            Err(_) => writer.rollback().map(drop),
        };
        if let Err(e) = settled {
            // A writer whose commit or rollback failed may still hold
            // documents. They must not ride in with a later commit: its
            // batch deletes only the copies the index already holds.
            *guard = None;
            return Err(err(e));
        }
        outcome?;
        self.reader.reload().map_err(err)?;
        Ok(())
    }
}

/// Names the live generation, atomically.
pub(super) fn write_current(dir: &Path, name: &str) -> Result<()> {
    let tmp = dir.join(format!("CURRENT.{}.tmp", std::process::id()));
    std::fs::write(&tmp, name).map_err(err)?;
    std::fs::rename(&tmp, dir.join("CURRENT")).map_err(err)
}
