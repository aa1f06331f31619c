//! The SQLite intake's group commit: each group of accepts is one
//! transaction (numbers, versions, pending entries, idempotency records and
//! jobs together), and a failed group is committed again request by
//! request.
use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chat_links::grouping::{GroupWork, WholeGroup, whole_then_alone};
use chat_observability::{
    propagate::{self, Linked},
    spans::{self, Destination},
};
use chat_queue::JobHistory;
use sea_orm::{ConnectionTrait, DatabaseTransaction, FromQueryResult, TransactionTrait};
use tracing::{Instrument, Span};

use super::{counters, *};

/// A new message without an idempotency record.
struct NewMessage<'a> {
    app_id: i64,
    chat_number: i64,
    body: &'a str,
    trace: Option<&'a str>,
}

pub(super) struct Committer {
    pub(super) writer: DatabaseConnection,
    pub(super) queue: Arc<SqliteQueue>,
    pub(super) pending_ttl: Duration,
}

#[async_trait]
impl GroupWork<Request> for Committer {
    type Answer = Result<Accepted>;

    async fn answer(&self, group: Vec<Request>) -> Vec<Result<Accepted>> {
        whole_then_alone(self, group).await
    }
}

#[async_trait]
impl WholeGroup<Request> for Committer {
    type Answer = Result<Accepted>;
    type Error = StoreError;

    async fn run(&self, group: &[Request]) -> Result<Vec<Result<Accepted>>> {
        let ops: Vec<(&Op, &WriteMeta)> = group.iter().map(|r| (&r.op, &r.meta)).collect();
        let (accepted, fed) = self.apply_all(&ops).await?;
        for queue in fed {
            self.queue.notify(queue);
        }
        Ok(accepted.into_iter().map(Ok).collect())
    }

    /// Any failure may be one request's (a bad idempotency record, say):
    /// the others are then committed one by one.
    fn alone(&self, e: &StoreError) -> bool {
        tracing::warn!(error = %e, "intake group failed; committing its requests one by one");
        true
    }

    fn failed(&self, e: &StoreError) -> Result<Accepted> {
        Err(e.replicate())
    }
}

impl Committer {
    /// Applies every op in one transaction, or none of them. The requests
    /// of one group were all in flight at once, so any order among them is
    /// one their clients could have seen: new messages without an
    /// idempotency record, most of any group, are written together in a
    /// few statements, after the others. Also returns the queues that got
    /// jobs, whose claims are woken once the transaction commits.
    async fn apply_all(
        &self,
        ops: &[(&Op, &WriteMeta)],
    ) -> Result<(Vec<Accepted>, Vec<QueueName>)> {
        let txn = self.writer.begin().await?;
        let mut out: Vec<Option<Accepted>> = (0..ops.len()).map(|_| None).collect();
        let mut fed = Vec::new();
        let mut plain = Vec::new();
        for (i, (op, meta)) in ops.iter().enumerate() {
            let link = meta.idempotency.as_ref();
            if let (
                Op::CreateMessage {
                    app_id,
                    chat_number,
                    body,
                },
                None,
            ) = (op, link)
            {
                plain.push((
                    i,
                    NewMessage {
                        app_id: *app_id,
                        chat_number: *chat_number,
                        body,
                        trace: meta.trace.as_deref(),
                    },
                ));
                continue;
            }
            if let Some(state) = match link {
                Some(link) => earlier(&txn, link).await?,
                None => None,
            } {
                out[i] = Some(Accepted::Earlier(state));
                continue;
            }
            let accepted = self.apply(&txn, op, meta.trace.as_deref()).await?;
            if !fed.contains(&op.queue()) {
                fed.push(op.queue());
            }
            if let Some(link) = link {
                record(&txn, link, &accepted).await?;
            }
            out[i] = Some(accepted);
        }
        if !plain.is_empty() {
            let news: Vec<&NewMessage> = plain.iter().map(|(_, m)| m).collect();
            let rows = self.create_messages(&txn, &news).await?;
            for ((i, _), row) in plain.iter().zip(rows) {
                out[*i] = Some(Accepted::Message(row));
            }
            fed.push(QueueName::Index);
        }
        txn.commit().await?;
        let accepted = out
            .into_iter()
            .map(|a| a.expect("every op was applied"))
            .collect();
        Ok((accepted, fed))
    }

    /// Numbers, versions, pending entries and jobs for new messages, in
    /// one statement each (one per application for versions), whatever
    /// their number: the group commit's cost is then its fsync, not a
    /// round trip to SQLite's thread per statement per message.
    async fn create_messages(
        &self,
        txn: &DatabaseTransaction,
        news: &[&NewMessage<'_>],
    ) -> Result<Vec<MessageRow>> {
        let scopes: Vec<String> = news
            .iter()
            .map(|m| format!("messages:{}:{}", m.app_id, m.chat_number))
            .collect();
        let mut numbers = counters::take(txn, &scopes, |scope| {
            let m = &news[scopes
                .iter()
                .position(|s| s == scope)
                .expect("a scope of ours")];
            let (app_id, chat_number) = (m.app_id, m.chat_number);
            async move { repo::messages::max_number(txn, app_id, chat_number).await }
        })
        .await?;
        let apps: Vec<String> = news.iter().map(|m| format!("v:{}", m.app_id)).collect();
        let mut versions = counters::versions(txn, &apps).await?;
        let now = chat_links::now();
        let mut rows = Vec::with_capacity(news.len());
        for ((m, scope), app) in news.iter().zip(&scopes).zip(&apps) {
            rows.push(MessageRow {
                application_id: m.app_id,
                chat_number: m.chat_number,
                number: counters::next_of(&mut numbers, scope),
                body: m.body.to_owned(),
                version: counters::next_of(&mut versions, app),
                created_at: now,
                updated_at: now,
            });
        }
        // The transaction is durable once it commits, so the rows are
        // written here rather than queued: what stays asynchronous is the
        // recount (the marks `upsert_all` writes) and indexing, one job for
        // the whole group.
        let span = group_span(news, self.queue.system());
        let persist = self.persist(txn, &rows, span.as_ref());
        match &span {
            Some(span) => persist.instrument(span.clone()).await?,
            None => persist.await?,
        }
        Ok(rows)
    }

    /// Writes the rows and their chats' count marks, and enqueues their
    /// index job, under `span` (the group's) when a request was traced.
    async fn persist(
        &self,
        txn: &DatabaseTransaction,
        rows: &[MessageRow],
        span: Option<&Span>,
    ) -> Result<()> {
        repo::messages::upsert_all(txn, rows).await?;
        let send = span.map(|span| {
            let to = Destination {
                queue: QueueName::Index.as_str(),
                system: self.queue.system(),
            };
            spans::send(to, Some(span))
        });
        let trace = send.as_ref().and_then(propagate::traceparent);
        let job = (serde_json::to_string(rows)?, trace);
        let enqueue = SqliteQueue::insert_many(txn, QueueName::Index, vec![job]);
        match send {
            Some(send) => enqueue.instrument(send).await,
            None => enqueue.await,
        }
    }

    async fn apply(
        &self,
        txn: &DatabaseTransaction,
        op: &Op,
        trace: Option<&str>,
    ) -> Result<Accepted> {
        match op {
            Op::CreateChat { app_id, name } => {
                let app_id = *app_id;
                let number = next(txn, &format!("chats:{app_id}"), async |t| {
                    repo::chats::max_number(t, app_id).await
                })
                .await?;
                let now = chat_links::now();
                let row = ChatRow {
                    application_id: app_id,
                    number,
                    name: name.clone(),
                    version: version(txn, app_id).await?,
                    created_at: now,
                    updated_at: now,
                };
                self.stage(
                    txn,
                    op.queue(),
                    &chat_scope(app_id, number),
                    row.version,
                    &row,
                    trace,
                )
                .await?;
                Ok(Accepted::Chat(row))
            }
            Op::UpdateChat { current, name } => {
                let row = ChatRow {
                    name: name.clone(),
                    version: version(txn, current.application_id).await?,
                    updated_at: chat_links::now(),
                    ..current.clone()
                };
                let scope = chat_scope(row.application_id, row.number);
                self.stage(txn, op.queue(), &scope, row.version, &row, trace)
                    .await?;
                Ok(Accepted::Chat(row))
            }
            Op::CreateMessage {
                app_id,
                chat_number,
                body,
            } => {
                let (app_id, chat_number) = (*app_id, *chat_number);
                let number = next(
                    txn,
                    &format!("messages:{app_id}:{chat_number}"),
                    async |t| repo::messages::max_number(t, app_id, chat_number).await,
                )
                .await?;
                let now = chat_links::now();
                let row = MessageRow {
                    application_id: app_id,
                    chat_number,
                    number,
                    body: body.clone(),
                    version: version(txn, app_id).await?,
                    created_at: now,
                    updated_at: now,
                };
                let scope = message_scope(app_id, chat_number, number);
                self.stage(txn, op.queue(), &scope, row.version, &row, trace)
                    .await?;
                Ok(Accepted::Message(row))
            }
            Op::UpdateMessage { current, body } => {
                let row = MessageRow {
                    body: body.clone(),
                    version: version(txn, current.application_id).await?,
                    updated_at: chat_links::now(),
                    ..current.clone()
                };
                let scope = message_scope(row.application_id, row.chat_number, row.number);
                self.stage(txn, op.queue(), &scope, row.version, &row, trace)
                    .await?;
                Ok(Accepted::Message(row))
            }
        }
    }

    /// Records the pending entry and enqueues the job for one row.
    async fn stage(
        &self,
        txn: &DatabaseTransaction,
        queue: QueueName,
        scope: &str,
        version: i64,
        row: &impl serde::Serialize,
        trace: Option<&str>,
    ) -> Result<()> {
        let json = serde_json::to_string(row)?;
        remember(self.pending_ttl, txn, scope, version, &json).await?;
        SqliteQueue::insert(txn, queue, json, trace).await
    }
}

/// The span of writing a group's new messages, drawn as a worker's batch
/// (see [`spans::process`]); `None` when no request of the group is
/// traced, so an untraced group builds no span.
fn group_span(news: &[&NewMessage<'_>], system: &'static str) -> Option<Span> {
    let senders: Vec<Linked> = news
        .iter()
        .filter_map(|m| m.trace.and_then(propagate::sender))
        .collect();
    if senders.is_empty() {
        return None;
    }
    let senders: Vec<&Linked> = senders.iter().collect();
    Some(spans::process(
        Destination {
            queue: QueueName::Messages.as_str(),
            system,
        },
        news.len(),
        &senders,
    ))
}

/// Takes the next number of a counter, seeding a missing counter from
/// the highest persisted number. The first statement is a write, so the
/// transaction takes SQLite's write lock at once: a writer in another
/// process (`chat api` beside `chat worker` on one file) then waits on the
/// busy timeout instead of failing a read-to-write upgrade.
async fn next(
    txn: &DatabaseTransaction,
    scope: &str,
    highest: impl AsyncFnOnce(&DatabaseTransaction) -> Result<i64>,
) -> Result<i64> {
    let bumped = Value::find_by_statement(stmt(
        "UPDATE counters SET value = value + 1 WHERE scope = ? RETURNING value",
        vec![scope.into()],
    ))
    .one(txn)
    .await?;
    if let Some(v) = bumped {
        return Ok(v.value);
    }
    let first = highest(txn).await? + 1;
    txn.execute_raw(stmt(
        "INSERT INTO counters (scope, value) VALUES (?, ?)",
        vec![scope.into(), first.into()],
    ))
    .await?;
    Ok(first)
}

/// The state an earlier run under this idempotency record accepted.
async fn earlier(txn: &DatabaseTransaction, link: &Link) -> Result<Option<String>> {
    #[derive(FromQueryResult)]
    struct Earlier {
        accepted: Option<String>,
    }
    let (scope, key) = idempotency::sqlite_record_id(&link.key);
    let row = Earlier::find_by_statement(stmt(
        "SELECT accepted FROM idempotency_keys WHERE scope = ? AND key = ?",
        vec![scope.into(), key.into()],
    ))
    .one(txn)
    .await?;
    Ok(row.and_then(|r| r.accepted))
}

/// Records the accepted state in the idempotency record, in the write's
/// own transaction.
async fn record(txn: &DatabaseTransaction, link: &Link, accepted: &Accepted) -> Result<()> {
    let state = match accepted {
        Accepted::Chat(row) => serde_json::to_string(row)?,
        Accepted::Message(row) => serde_json::to_string(row)?,
        Accepted::Earlier(state) => state.clone(),
    };
    let (scope, key) = idempotency::sqlite_record_id(&link.key);
    txn.execute_raw(stmt(
        "UPDATE idempotency_keys SET accepted = ? WHERE scope = ? AND key = ?",
        vec![state.into(), scope.into(), key.into()],
    ))
    .await?;
    Ok(())
}

/// The application's next version: `max(last + 1, now in µs)`.
async fn version(txn: &DatabaseTransaction, app_id: i64) -> Result<i64> {
    let now = chat_links::now_micros();
    let v = Value::find_by_statement(stmt(
        "INSERT INTO counters (scope, value) VALUES (?, ?) \
         ON CONFLICT (scope) DO UPDATE SET value = MAX(counters.value + 1, excluded.value) \
         RETURNING value",
        vec![format!("v:{app_id}").into(), now.into()],
    ))
    .one(txn)
    .await?;
    Ok(v.map(|v| v.value).unwrap_or(now))
}

/// Records a write's state for read-your-writes until its job persists
/// it; an older state never replaces a newer one.
async fn remember(
    pending_ttl: Duration,
    txn: &DatabaseTransaction,
    scope: &str,
    version: i64,
    state: &str,
) -> Result<()> {
    let expires = chat_links::now_millis() + pending_ttl.as_millis() as i64;
    txn.execute_raw(stmt(
        "INSERT INTO pending_rows (scope, version, state, expires_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (scope) DO UPDATE SET version = excluded.version, state = excluded.state, \
         expires_at = excluded.expires_at WHERE excluded.version > pending_rows.version",
        vec![scope.into(), version.into(), state.into(), expires.into()],
    ))
    .await?;
    Ok(())
}
