//! A search backend that can be switched off, for tests of what the rest of
//! the system does while search is down. Off, every call fails as an
//! unreachable server does; on, calls pass through untouched.
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;

use super::{ChatKey, Cursor, SearchIndex, SearchPage, Target};
use chat_links::error::{Result, StoreError};
use chat_store::model::MessageRow;

pub struct Switch {
    inner: Arc<dyn SearchIndex>,
    down: AtomicBool,
}

impl Switch {
    pub fn wrap(inner: Arc<dyn SearchIndex>) -> Self {
        Self {
            inner,
            down: AtomicBool::new(false),
        }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("search is switched off".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SearchIndex for Switch {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn ensure(&self) -> Result<()> {
        self.check()?;
        self.inner.ensure().await
    }
    async fn ping(&self) -> Result<()> {
        self.check()?;
        self.inner.ping().await
    }
    async fn index(&self, target: &Target, rows: &[MessageRow]) -> Result<()> {
        self.check()?;
        self.inner.index(target, rows).await
    }
    async fn search(
        &self,
        chat: ChatKey,
        query: &str,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<SearchPage> {
        self.check()?;
        self.inner.search(chat, query, limit, after).await
    }
    async fn counts(&self, chats: &[ChatKey]) -> Result<Vec<u64>> {
        self.check()?;
        self.inner.counts(chats).await
    }
    async fn numbers(&self, chat: ChatKey) -> Result<Vec<i64>> {
        self.check()?;
        self.inner.numbers(chat).await
    }
    async fn delete(&self, chat: ChatKey, numbers: &[i64]) -> Result<()> {
        self.check()?;
        self.inner.delete(chat, numbers).await
    }
    async fn create_generation(&self, name: &str, fresh: bool) -> Result<()> {
        self.check()?;
        self.inner.create_generation(name, fresh).await
    }
    async fn promote_generation(&self, name: &str) -> Result<()> {
        self.check()?;
        self.inner.promote_generation(name).await
    }
}
