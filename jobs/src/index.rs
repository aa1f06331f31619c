//! The search-indexing job: a message's committed state, indexed in bulk.
//!
//! The message writer enqueues one `IndexMessage` per row after its batch
//! commits, so persistence never waits on search: while search is down
//! these jobs fail and retry with backoff, and index once it is back. The
//! document keeps the row's version, and the backends never let an older
//! version replace a newer one, so a late or redelivered job is harmless.
use std::sync::Arc;

use apalis_core::{error::BoxDynError, task::data::Data};
use async_trait::async_trait;
use chat_store::{
    StoreError,
    model::MessageRow,
    search::{SearchIndex, Target},
};
use serde::{Deserialize, Serialize};

use crate::batcher::{Batcher, BulkWriter};

/// Index a message's state as it was committed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IndexMessage(pub MessageRow);

pub struct SearchWriter(pub Arc<dyn SearchIndex>);

#[async_trait]
impl BulkWriter<MessageRow> for SearchWriter {
    /// One `_bulk` request, or one tantivy commit, per batch.
    async fn write(&self, rows: &[MessageRow]) -> Result<(), StoreError> {
        self.0.index(&Target::Live, rows).await
    }
}

pub async fn index_message(
    job: IndexMessage,
    batcher: Data<Batcher<MessageRow>>,
) -> Result<(), BoxDynError> {
    batcher.submit(job.0).await.map_err(Into::into)
}
