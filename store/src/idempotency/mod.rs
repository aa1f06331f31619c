//! `Idempotency-Key`: a write sent again under the same key gets the first
//! answer back, and writes nothing new (IETF httpapi
//! draft-ietf-httpapi-idempotency-key-header).
//!
//! A key names a *record*, scoped to one application (or to the creation of
//! applications), which holds the request's fingerprint, who is running it
//! and until when (a lease), and once it finished, the response. A write
//! made under a key also leaves its accepted state in the record in the
//! same atomic step as the write itself (the accept script, or the intake
//! transaction): a request whose answer was lost (a timeout, a cut
//! connection, a crashed API process) is therefore answered exactly when
//! sent again, and never applied twice, even when the first run never got
//! to store its response.
//!
//! - [`RedisIdempotency`]: a hash per record, expiring with the retention.
//! - [`SqliteIdempotency`]: a row per record in `idempotency_keys`.
use std::time::Duration;

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use chat_links::error::Result;

mod redis;
mod sqlite;

pub use self::redis::RedisIdempotency;
pub(crate) use self::redis::record_key as redis_record_key;
pub use self::sqlite::SqliteIdempotency;
pub(crate) use self::sqlite::record_id as sqlite_record_id;

/// Whose writes a key belongs to: keys of different applications never
/// meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Application(i64),
    /// `POST /applications`, which has no application yet.
    Applications,
}

impl Scope {
    fn label(&self) -> String {
        match self {
            Scope::Application(id) => format!("app:{id}"),
            Scope::Applications => "apps".to_owned(),
        }
    }
}

/// A client's key within its scope, kept as a digest: keys are up to 255
/// characters the client chose, and are not worth storing as such.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub scope: Scope,
    digest: String,
}

impl Key {
    pub fn new(scope: Scope, client_key: &str) -> Self {
        Self {
            scope,
            digest: digest(client_key.as_bytes()),
        }
    }
}

/// A digest fit for a key name or a fingerprint.
pub fn digest(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

/// A run of a request under its key, held by this process: the writes it
/// makes record their accepted state under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub key: Key,
    /// Who holds the record's lease.
    owner: String,
}

/// A response as stored for replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub status: u16,
    /// The headers worth replaying (`content-type`, `location`).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a request under a key is to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// Run it: first time, or an earlier run ended without a response. Any
    /// write it makes that an earlier run already made is found in the
    /// record and returned instead of made again.
    Run(Link),
    /// It ran to the end before: answer this.
    Replay(Stored),
    /// Another request under this key is running now.
    Busy,
    /// The key was used for a different request.
    Mismatch,
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for a request whose fingerprint is `fingerprint`, for at
    /// most `lease` (after which a crashed run's key is free again).
    async fn begin(&self, key: &Key, fingerprint: &str, lease: Duration) -> Result<Begin>;

    /// Stores the response of the run, which ends its lease.
    async fn complete(&self, link: &Link, response: &Stored) -> Result<()>;

    /// Ends the run's lease without a response: it failed before writing,
    /// or its outcome is unknown. A request sent again runs, and finds any
    /// write this run made.
    async fn release(&self, link: &Link) -> Result<()>;

    /// The value this request's run must use where it makes one up (an
    /// application's token): `proposal` the first time, what the first run
    /// proposed ever after.
    async fn plan(&self, link: &Link, proposal: &str) -> Result<String>;

    /// Removes records past their retention, where the backend does not
    /// expire them itself.
    async fn purge_expired(&self) -> Result<u64> {
        Ok(0)
    }
}

fn new_owner() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_as_digests_scoped_by_application() {
        let a = Key::new(
            Scope::Application(1),
            "8e03978e-40d5-43e8-bc93-6894a57f9324",
        );
        let b = Key::new(
            Scope::Application(2),
            "8e03978e-40d5-43e8-bc93-6894a57f9324",
        );
        assert_eq!(a.digest, b.digest);
        assert_ne!(a, b);
        assert!(!a.digest.contains("8e03978e"));
        assert_eq!(a.digest.len(), 43);
    }
}
