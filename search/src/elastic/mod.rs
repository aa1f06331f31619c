//! The Elasticsearch backend.
//!
//! Writes and searches go through an alias (`SEARCH_INDEX`, default
//! `chat-messages`) that names exactly one concrete index, a generation
//! `<alias>-<name>`. Every generation takes its settings from one index
//! template, so a rebuild creates a new generation, fills it, and swaps the
//! alias in one atomic `_aliases` call.
//!
//! Each message is stored with its chat as routing ([`dsl::routing`]), so
//! a chat lives on one shard and a chat-scoped request asks only that one;
//! the number of primary shards is a setting (`ELASTICSEARCH_SHARDS`).
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use elasticsearch::{
    Elasticsearch,
    http::{
        Method, StatusCode,
        headers::{CONTENT_TYPE, HeaderMap, HeaderValue},
        transport::{SingleNodeConnectionPool, TransportBuilder},
    },
};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use super::{ChatKey, Cursor, SearchIndex, SearchPage, Target};
use chat_links::error::{Result, StoreError};
use chat_store::model::MessageRow;

mod bulk;
pub mod dsl;
pub mod mapping;
mod transport;

use transport::REQUEST_TIMEOUT;

const FIRST_GENERATION: &str = "g1";
/// Numbers listed per request when comparing a chat with the database.
const NUMBERS_PAGE: usize = 5_000;

pub struct Elastic {
    client: Elasticsearch,
    alias: String,
    /// Primary shards of every generation created from now on.
    shards: u32,
    /// Set once the template and alias are known to exist; cleared when a
    /// write finds the index missing (a wiped cluster), so it is recreated.
    ensured: AtomicBool,
}

#[derive(Deserialize)]
struct Hit {
    #[serde(rename = "_source")]
    source: MessageRow,
    #[serde(default)]
    sort: Vec<Value>,
}

impl Elastic {
    pub fn connect(url: &str, alias: &str, shards: u32) -> Result<Self> {
        let url = url
            .parse()
            .map_err(|e| StoreError::Search(format!("ELASTICSEARCH_URL: {e}")))?;
        let transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| StoreError::Search(e.to_string()))?;
        Ok(Self {
            client: Elasticsearch::new(transport),
            alias: alias.to_owned(),
            shards,
            ensured: AtomicBool::new(false),
        })
    }

    fn generation_index(&self, name: &str) -> String {
        format!("{}-{name}", self.alias)
    }

    async fn put_template(&self) -> Result<()> {
        let path = format!("/_index_template/{}", self.alias);
        self.send(
            Method::Put,
            &path,
            Some(mapping::template(&self.alias, self.shards).to_string()),
        )
        .await?
        .ok("put index template")?;
        Ok(())
    }

    /// Creates a generation's index; the template supplies its settings.
    async fn create_index(&self, index: &str, body: Value) -> Result<()> {
        let reply = self
            .send(Method::Put, &format!("/{index}"), Some(body.to_string()))
            .await?;
        if reply.status.is_success()
            || reply.error_type() == Some("resource_already_exists_exception")
        {
            return Ok(());
        }
        reply.ok("create index").map(|_| ())
    }

    /// The concrete indices the alias names now.
    async fn aliased(&self) -> Result<Vec<String>> {
        let reply = self
            .send(Method::Get, &format!("/_alias/{}", self.alias), None)
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let body = reply.ok("get alias")?;
        Ok(body
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }
}

#[async_trait]
impl SearchIndex for Elastic {
    fn kind(&self) -> &'static str {
        "elasticsearch"
    }

    async fn ping(&self) -> Result<()> {
        self.send(Method::Get, "/", None).await?.ok("ping")?;
        Ok(())
    }

    async fn ensure(&self) -> Result<()> {
        if self.ensured.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.put_template().await?;
        if self.aliased().await?.is_empty() {
            // Every process races to the same first name, so at most one
            // index is created, whoever wins.
            let first = self.generation_index(FIRST_GENERATION);
            self.create_index(
                &first,
                json!({ "aliases": { &self.alias: { "is_write_index": true } } }),
            )
            .await?;
        }
        self.ensured.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn index(&self, target: &Target, rows: &[MessageRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let index = match target {
            Target::Live => {
                self.ensure().await?;
                self.alias.clone()
            }
            Target::Generation(name) => self.generation_index(name),
        };
        self.bulk(&index, rows).await
    }

    async fn search(
        &self,
        chat: ChatKey,
        query: &str,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<SearchPage> {
        // The same rule as the embedded backend: a query with no word to
        // match (only punctuation or emoji) matches nothing.
        if super::text::query_words(query).is_empty() || limit == 0 {
            return Ok(SearchPage::default());
        }
        let body = dsl::search(chat, query, limit, after);
        let routing = dsl::routing(chat);
        let reply = self
            .send_with(
                Method::Post,
                &format!("/{}/_search", self.alias),
                &[("routing", &routing)],
                Some(body.to_string()),
            )
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(SearchPage::default());
        }
        let body = reply.ok("search")?;
        let hits: Vec<Hit> = serde_json::from_value(body["hits"]["hits"].clone())?;
        let mut page = SearchPage::default();
        let mut last = None;
        for hit in hits {
            if page.hits.len() == limit {
                page.next_after = last;
                break;
            }
            let score = hit.sort.first().and_then(Value::as_f64).unwrap_or(0.0) as f32;
            last = Some(Cursor {
                score,
                number: hit.source.number,
            });
            page.hits.push(hit.source);
        }
        Ok(page)
    }

    async fn counts(&self, chats: &[ChatKey]) -> Result<Vec<u64>> {
        if chats.is_empty() {
            return Ok(Vec::new());
        }
        // No routing: the drift check asks about a thousand chats at once,
        // whose routing values would spread over most shards anyway, and
        // whose comma-separated list would outgrow the 4 KB request line
        // Elasticsearch accepts (`http.max_initial_line_length`).
        let reply = self
            .send(
                Method::Post,
                &format!("/{}/_search", self.alias),
                Some(dsl::counts(chats).to_string()),
            )
            .await?;
        let body = reply.ok("count per chat")?;
        let mut found = std::collections::HashMap::new();
        for bucket in body["aggregations"]["per_chat"]["buckets"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let (Some(key), Some(n)) = (bucket["key"].as_str(), bucket["doc_count"].as_u64()) {
                found.insert(key.to_owned(), n);
            }
        }
        Ok(chats
            .iter()
            .map(|c| found.get(&c.term()).copied().unwrap_or(0))
            .collect())
    }

    async fn numbers(&self, chat: ChatKey) -> Result<Vec<i64>> {
        let mut numbers = Vec::new();
        let mut after = None;
        let routing = dsl::routing(chat);
        loop {
            let reply = self
                .send_with(
                    Method::Post,
                    &format!("/{}/_search", self.alias),
                    &[("routing", &routing)],
                    Some(dsl::numbers(chat, after, NUMBERS_PAGE).to_string()),
                )
                .await?;
            let body = reply.ok("list numbers")?;
            let page: Vec<i64> = body["hits"]["hits"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h["sort"][0].as_i64())
                .collect();
            numbers.extend(&page);
            if page.len() < NUMBERS_PAGE {
                return Ok(numbers);
            }
            after = page.last().copied();
        }
    }

    async fn delete(&self, chat: ChatKey, numbers: &[i64]) -> Result<()> {
        if numbers.is_empty() {
            return Ok(());
        }
        let body = dsl::bulk_delete(&self.alias, chat, numbers);
        let body = self
            .send(Method::Post, "/_bulk", Some(body))
            .await?
            .ok("bulk delete")?;
        let failed = body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| {
                let status = i["delete"]["status"].as_u64().unwrap_or(0);
                // 404: already gone.
                !(200..300).contains(&status) && status != 404
            })
            .count();
        if failed > 0 {
            return Err(StoreError::Search(format!("bulk delete: {failed} failed")));
        }
        Ok(())
    }

    async fn create_generation(&self, name: &str, fresh: bool) -> Result<()> {
        self.put_template().await?;
        let index = self.generation_index(name);
        if fresh {
            let reply = self
                .send(Method::Delete, &format!("/{index}"), None)
                .await?;
            if reply.status != StatusCode::NOT_FOUND {
                reply.ok("delete unfinished generation")?;
            }
        }
        // Bulk loading: no refreshes until it is promoted.
        self.create_index(
            &index,
            json!({ "settings": { "index": { "refresh_interval": "-1" } } }),
        )
        .await
    }

    async fn promote_generation(&self, name: &str) -> Result<()> {
        let index = self.generation_index(name);
        self.send(
            Method::Put,
            &format!("/{index}/_settings"),
            Some(json!({ "index": { "refresh_interval": null } }).to_string()),
        )
        .await?
        .ok("restore refresh interval")?;
        self.send(Method::Post, &format!("/{index}/_refresh"), None)
            .await?
            .ok("refresh")?;
        let old = self.aliased().await?;
        let mut actions: Vec<Value> = old
            .iter()
            .filter(|o| **o != index)
            .map(|o| json!({ "remove": { "index": o, "alias": self.alias } }))
            .collect();
        actions.push(
            json!({ "add": { "index": index, "alias": self.alias, "is_write_index": true } }),
        );
        self.send(
            Method::Post,
            "/_aliases",
            Some(json!({ "actions": actions }).to_string()),
        )
        .await?
        .ok("swap alias")?;
        for o in old.iter().filter(|o| **o != index) {
            let reply = self.send(Method::Delete, &format!("/{o}"), None).await?;
            if !reply.status.is_success() {
                tracing::warn!(index = %o, status = %reply.status, "could not delete the old generation");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader, Read, Write},
        net::TcpListener,
        sync::{Arc, Mutex},
    };

    use super::*;

    const CHAT: ChatKey = ChatKey {
        application_id: 7,
        chat_number: 3,
    };

    /// A request as the server received it: the request line with `%3A`
    /// decoded (the client may or may not escape `:`), and the body.
    #[derive(Debug)]
    struct Seen {
        line: String,
        body: String,
    }

    impl Seen {
        fn ndjson(&self) -> Vec<Value> {
            self.body
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    /// A server that records each request and answers every one with an
    /// empty search, bulk and alias answer at once; one connection per
    /// request, so no request waits behind a kept-alive one.
    fn server() -> (String, Arc<Mutex<Vec<Seen>>>) {
        const REPLY: &str =
            r#"{"hits":{"hits":[]},"errors":false,"items":[],"chat-messages-g1":{}}"#;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                log.lock().unwrap().push(Seen {
                    line: line.trim_end().replace("%3A", ":"),
                    body: String::from_utf8(body).unwrap(),
                });
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{REPLY}",
                    REPLY.len()
                )
                .unwrap();
            }
        });
        (url, seen)
    }

    fn row(chat: ChatKey, number: i64) -> MessageRow {
        let t = chrono::DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap();
        MessageRow {
            application_id: chat.application_id,
            chat_number: chat.chat_number,
            number,
            body: "hello".into(),
            version: 1,
            created_at: t,
            updated_at: t,
        }
    }

    #[tokio::test]
    async fn chat_scoped_reads_ask_only_the_chats_shard() {
        let (url, seen) = server();
        let es = Elastic::connect(&url, "chat-messages", 3).unwrap();
        es.search(CHAT, "hello", 10, None).await.unwrap();
        es.numbers(CHAT).await.unwrap();
        let other = ChatKey {
            application_id: 8,
            chat_number: 1,
        };
        es.counts(&[CHAT, other]).await.unwrap();
        let lines: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.line.clone())
            .collect();
        assert_eq!(
            lines,
            [
                "POST /chat-messages/_search?routing=7:3 HTTP/1.1",
                "POST /chat-messages/_search?routing=7:3 HTTP/1.1",
                "POST /chat-messages/_search HTTP/1.1",
            ]
        );
    }

    #[tokio::test]
    async fn writes_and_deletes_carry_the_chats_routing() {
        let (url, seen) = server();
        let es = Elastic::connect(&url, "chat-messages", 3).unwrap();
        let other = ChatKey {
            application_id: 8,
            chat_number: 1,
        };
        es.index(
            &Target::Generation("g2".into()),
            &[row(CHAT, 1), row(other, 2)],
        )
        .await
        .unwrap();
        es.delete(CHAT, &[4]).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].line, "POST /_bulk HTTP/1.1");
        let actions: Vec<Value> = seen[0].ndjson().into_iter().step_by(2).collect();
        assert_eq!(
            actions,
            [
                json!({ "index": { "_index": "chat-messages-g2", "_id": "7:3:1", "routing": "7:3", "version": 1, "version_type": "external" } }),
                json!({ "index": { "_index": "chat-messages-g2", "_id": "8:1:2", "routing": "8:1", "version": 1, "version_type": "external" } }),
            ]
        );
        assert_eq!(
            seen[1].ndjson(),
            [json!({ "delete": { "_index": "chat-messages", "_id": "7:3:4", "routing": "7:3" } })]
        );
    }

    #[tokio::test]
    async fn the_template_sent_carries_the_configured_shard_count() {
        let (url, seen) = server();
        Elastic::connect(&url, "chat-messages", 5)
            .unwrap()
            .ensure()
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].line, "PUT /_index_template/chat-messages HTTP/1.1");
        let template: Value = serde_json::from_str(&seen[0].body).unwrap();
        assert_eq!(template["template"]["settings"]["number_of_shards"], 5);
    }
}
