//! Resolving tokens and chat numbers, with in-process memory of what is
//! known to exist. Applications and chats are never deleted, so a positive
//! answer can be kept for the life of the process; that takes a database
//! round trip off every message write.
use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use crate::ApiDeps;
use chat_store::{
    model::{ChatView, newest_chat},
    ratelimit::folded::Folded,
    repo,
};

use crate::error::ApiError;

/// Entries kept before the memory is dropped and rebuilt from misses.
const CAPACITY: usize = 200_000;

#[derive(Default)]
pub struct Lookup {
    apps: Mutex<HashMap<String, i64>>,
    chats: Mutex<HashSet<(i64, i64)>>,
}

impl Lookup {
    /// The internal id of the application with this token.
    pub async fn app_id(&self, deps: &ApiDeps, token: &str) -> Result<i64, ApiError> {
        if let Some(id) = self.apps.lock().unwrap().get(token) {
            return Ok(*id);
        }
        let app = repo::applications::find_by_token(&deps.db, token)
            .await?
            .ok_or(ApiError::NotFound("application"))?;
        let mut apps = self.apps.lock().unwrap();
        if apps.len() >= CAPACITY {
            apps.clear();
        }
        apps.insert(token.to_owned(), app.id);
        Ok(app.id)
    }

    /// The newest state of a chat: persisted, or accepted and pending.
    /// With a read's `limits` (see `rate_limit`), the intake checks them
    /// while it reads the pending entry, and the database is read only
    /// after it admitted the read.
    pub async fn chat(
        &self,
        deps: &ApiDeps,
        app_id: i64,
        number: i64,
        limits: Option<&Folded>,
    ) -> Result<ChatView, ApiError> {
        let (mut persisted, pending) = match limits {
            Some(limits) => {
                let pending = deps
                    .intake
                    .pending_chat(app_id, number, Some(limits))
                    .await?;
                (repo::chats::find(&deps.db, app_id, number).await?, pending)
            }
            None => {
                let (persisted, pending) = tokio::join!(
                    repo::chats::find(&deps.db, app_id, number),
                    deps.intake.pending_chat(app_id, number, None)
                );
                (persisted?, pending?)
            }
        };
        if persisted.is_none() && pending.is_none() {
            // The row may have committed, and its pending entry gone,
            // between the two reads: the database answers for it now.
            persisted = repo::chats::find(&deps.db, app_id, number).await?;
        }
        let chat = newest_chat(persisted, pending).ok_or(ApiError::NotFound("chat"))?;
        self.remember_chat(app_id, number);
        Ok(chat)
    }

    /// Fails with 404 unless the chat exists, skipping storage when this
    /// process has seen it before.
    pub async fn ensure_chat(
        &self,
        deps: &ApiDeps,
        app_id: i64,
        number: i64,
    ) -> Result<(), ApiError> {
        if self.chats.lock().unwrap().contains(&(app_id, number)) {
            return Ok(());
        }
        self.chat(deps, app_id, number, None).await.map(|_| ())
    }

    pub fn remember_chat(&self, app_id: i64, number: i64) {
        let mut chats = self.chats.lock().unwrap();
        if chats.len() >= CAPACITY {
            chats.clear();
        }
        chats.insert((app_id, number));
    }
}
