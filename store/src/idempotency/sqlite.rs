//! Idempotency records in the embedded database: one row per key in
//! `idempotency_keys`, written on the single writer connection, so every
//! step is serialised with the intake transactions that record accepted
//! states in the same rows.
use std::time::Duration;

use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement};

use super::{Begin, IdempotencyStore, Key, Link, Stored, new_owner};
use chat_links::error::Result;

pub struct SqliteIdempotency {
    writer: DatabaseConnection,
    retention: Duration,
}

#[derive(FromQueryResult)]
struct Record {
    fingerprint: String,
    owner: String,
    lease_until: i64,
    status: Option<i32>,
    headers: Option<String>,
    body: Option<Vec<u8>>,
}

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

/// The row's columns that name a record.
pub(crate) fn record_id(key: &Key) -> (String, String) {
    (key.scope.label(), key.digest.clone())
}

impl SqliteIdempotency {
    pub fn new(writer: DatabaseConnection, retention: Duration) -> Self {
        Self { writer, retention }
    }
}

#[async_trait]
impl IdempotencyStore for SqliteIdempotency {
    async fn begin(&self, key: &Key, fingerprint: &str, lease: Duration) -> Result<Begin> {
        let (scope, digest) = record_id(key);
        let now = chat_links::now_millis();
        let owner = new_owner();
        let until = now + lease.as_millis() as i64;
        let expires = now + self.retention.as_millis() as i64;
        // A record past its retention counts as absent: start it afresh.
        self.writer
            .execute_raw(stmt(
                "DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND expires_at < ?",
                vec![scope.clone().into(), digest.clone().into(), now.into()],
            ))
            .await?;
        let inserted = self
            .writer
            .execute_raw(stmt(
                "INSERT INTO idempotency_keys \
                   (scope, key, fingerprint, owner, lease_until, expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO NOTHING",
                vec![
                    scope.clone().into(),
                    digest.clone().into(),
                    fingerprint.into(),
                    owner.clone().into(),
                    until.into(),
                    expires.into(),
                ],
            ))
            .await?;
        let link = Link {
            key: key.clone(),
            owner: owner.clone(),
        };
        if inserted.rows_affected() == 1 {
            return Ok(Begin::Run(link));
        }
        let Some(record) = Record::find_by_statement(stmt(
            "SELECT fingerprint, owner, lease_until, status, headers, body \
             FROM idempotency_keys WHERE scope = ? AND key = ?",
            vec![scope.clone().into(), digest.clone().into()],
        ))
        .one(&self.writer)
        .await?
        else {
            return Ok(Begin::Busy);
        };
        if record.fingerprint != fingerprint {
            return Ok(Begin::Mismatch);
        }
        if let Some(status) = record.status {
            return Ok(Begin::Replay(Stored {
                status: status as u16,
                headers: serde_json::from_str(record.headers.as_deref().unwrap_or("[]"))?,
                body: record.body.unwrap_or_default(),
            }));
        }
        if record.lease_until > now {
            return Ok(Begin::Busy);
        }
        // Taken over only from the owner seen, so two requests racing for a
        // free record cannot both win it.
        let taken = self
            .writer
            .execute_raw(stmt(
                "UPDATE idempotency_keys SET owner = ?, lease_until = ? \
                 WHERE scope = ? AND key = ? AND owner = ?",
                vec![
                    owner.into(),
                    until.into(),
                    scope.into(),
                    digest.into(),
                    record.owner.into(),
                ],
            ))
            .await?;
        Ok(if taken.rows_affected() == 1 {
            Begin::Run(link)
        } else {
            Begin::Busy
        })
    }

    async fn complete(&self, link: &Link, response: &Stored) -> Result<()> {
        let (scope, digest) = record_id(&link.key);
        self.writer
            .execute_raw(stmt(
                "UPDATE idempotency_keys SET status = ?, headers = ?, body = ?, lease_until = 0 \
                 WHERE scope = ? AND key = ? AND owner = ?",
                vec![
                    i32::from(response.status).into(),
                    serde_json::to_string(&response.headers)?.into(),
                    response.body.clone().into(),
                    scope.into(),
                    digest.into(),
                    link.owner.clone().into(),
                ],
            ))
            .await?;
        Ok(())
    }

    async fn release(&self, link: &Link) -> Result<()> {
        let (scope, digest) = record_id(&link.key);
        self.writer
            .execute_raw(stmt(
                "UPDATE idempotency_keys SET lease_until = 0 \
                 WHERE scope = ? AND key = ? AND owner = ?",
                vec![scope.into(), digest.into(), link.owner.clone().into()],
            ))
            .await?;
        Ok(())
    }

    async fn plan(&self, link: &Link, proposal: &str) -> Result<String> {
        #[derive(FromQueryResult)]
        struct Planned {
            planned: Option<String>,
        }
        let (scope, digest) = record_id(&link.key);
        let planned = Planned::find_by_statement(stmt(
            "UPDATE idempotency_keys SET planned = COALESCE(planned, ?) \
             WHERE scope = ? AND key = ? RETURNING planned",
            vec![proposal.into(), scope.into(), digest.into()],
        ))
        .one(&self.writer)
        .await?;
        Ok(planned
            .and_then(|p| p.planned)
            .unwrap_or_else(|| proposal.to_owned()))
    }

    async fn purge_expired(&self) -> Result<u64> {
        let done = self
            .writer
            .execute_raw(stmt(
                "DELETE FROM idempotency_keys WHERE expires_at < ?",
                vec![chat_links::now_millis().into()],
            ))
            .await?;
        Ok(done.rows_affected())
    }
}
