//! The search backend of a process that must not search or index: no
//! `ELASTICSEARCH_URL`, and a role other than `chat serve`.
//!
//! tantivy's index lives in one process's `DATA_DIR`, with one writer.
//! An API and a worker on different hosts would each open their own, and
//! searches would find nothing; two workers on one directory would fight
//! over its writer lock. So only `chat serve`, which both writes and reads
//! its index, embeds one, and every other role answers
//! [`StoreError::SearchNotConfigured`] instead of a silently wrong result.
use async_trait::async_trait;

use super::{ChatKey, Cursor, SearchIndex, SearchPage, Target};
use chat_links::error::{Result, StoreError};
use chat_store::model::MessageRow;

pub struct Unconfigured;

impl Unconfigured {
    /// The `kind` of this backend.
    pub const KIND: &'static str = "none";
}

fn refused<T>() -> Result<T> {
    Err(StoreError::SearchNotConfigured)
}

#[async_trait]
impl SearchIndex for Unconfigured {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    async fn ensure(&self) -> Result<()> {
        Ok(())
    }

    /// Nothing is down: there is nothing to reach.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn index(&self, _: &Target, _: &[MessageRow]) -> Result<()> {
        refused()
    }

    async fn search(&self, _: ChatKey, _: &str, _: usize, _: Option<Cursor>) -> Result<SearchPage> {
        refused()
    }

    async fn counts(&self, _: &[ChatKey]) -> Result<Vec<u64>> {
        refused()
    }

    async fn numbers(&self, _: ChatKey) -> Result<Vec<i64>> {
        refused()
    }

    async fn delete(&self, _: ChatKey, _: &[i64]) -> Result<()> {
        refused()
    }

    async fn create_generation(&self, _: &str, _: bool) -> Result<()> {
        refused()
    }

    async fn promote_generation(&self, _: &str) -> Result<()> {
        refused()
    }
}
