//! Request bodies: the search query, the bulk index lines and the count
//! aggregation, and the routing of a chat's documents. Pure functions of
//! their inputs, so they are tested without a server against the
//! documented formats.
use serde_json::{Value, json};

use super::mapping::{SEARCH_ANALYZER, SEARCH_FIELDS};
use crate::{ChatKey, Cursor, doc_id};
use chat_store::model::MessageRow;

/// The routing value of every document of `chat`, and of every request
/// scoped to it. A whole chat sharing one value puts it on one shard, so a
/// chat-scoped search asks that shard alone instead of all of them; the
/// value must never change, or a chat's documents would be split between
/// shards and a routed request would miss some.
pub fn routing(chat: ChatKey) -> String {
    chat.term()
}

/// A chat's messages matching every whitespace-separated word of `query`,
/// best first. Each word is one clause, so every word must match, and
/// within a word every term the analyzer makes of it must match one field
/// (`operator: and`). A word the analyzer drops entirely (an emoji) does
/// not constrain the search (`zero_terms_query: all`).
pub fn search(chat: ChatKey, query: &str, limit: usize, after: Option<Cursor>) -> Value {
    let words: Vec<Value> = query
        .split_whitespace()
        .map(|word| {
            json!({
                "multi_match": {
                    "query": word,
                    "fields": SEARCH_FIELDS,
                    "type": "best_fields",
                    "operator": "and",
                    "analyzer": SEARCH_ANALYZER,
                    "zero_terms_query": "all"
                }
            })
        })
        .collect();
    let mut body = json!({
        // One extra hit tells whether another page follows.
        "size": limit + 1,
        "track_total_hits": false,
        "query": {
            "bool": {
                "filter": [{ "term": { "chat": chat.term() } }],
                "must": words
            }
        },
        "sort": [{ "_score": "desc" }, { "number": "desc" }],
        "_source": ["application_id", "chat_number", "number", "body", "version", "created_at", "updated_at"]
    });
    if let Some(c) = after {
        body["search_after"] = json!([c.score, c.number]);
    }
    body
}

/// The document stored for a message.
pub fn source(row: &MessageRow) -> Value {
    json!({
        "chat": ChatKey::of(row).term(),
        "application_id": row.application_id,
        "chat_number": row.chat_number,
        "number": row.number,
        "body": row.body,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

/// The NDJSON body of a `_bulk` request indexing `rows` into `index`.
///
/// External versioning makes Elasticsearch keep whichever document has the
/// higher version: an older or equal one is refused with a 409 per item,
/// which the caller counts as done.
pub fn bulk(index: &str, rows: &[MessageRow]) -> String {
    let mut out = String::with_capacity(rows.len() * 256);
    for row in rows {
        let action = json!({
            "index": {
                "_index": index,
                "_id": doc_id(row),
                "routing": routing(ChatKey::of(row)),
                "version": row.version,
                "version_type": "external"
            }
        });
        out.push_str(&action.to_string());
        out.push('\n');
        out.push_str(&source(row).to_string());
        out.push('\n');
    }
    out
}

/// Document counts per chat for the given chats, in one request.
pub fn counts(chats: &[ChatKey]) -> Value {
    let terms: Vec<String> = chats.iter().map(ChatKey::term).collect();
    json!({
        "size": 0,
        "track_total_hits": false,
        "query": { "terms": { "chat": terms } },
        "aggs": {
            "per_chat": { "terms": { "field": "chat", "size": chats.len().max(1) } }
        }
    })
}

/// One page of a chat's message numbers, ascending, after `after`.
pub fn numbers(chat: ChatKey, after: Option<i64>, size: usize) -> Value {
    let mut body = json!({
        "size": size,
        "track_total_hits": false,
        "_source": false,
        "query": { "bool": { "filter": [{ "term": { "chat": chat.term() } }] } },
        "sort": [{ "number": "asc" }]
    });
    if let Some(n) = after {
        body["search_after"] = json!([n]);
    }
    body
}

/// The NDJSON body of a `_bulk` request deleting messages of a chat.
///
/// A delete finds a document only on the shard its routing names: without
/// the chat's routing it would look on the shard of its id, answer 404,
/// and the caller would take the message as already gone.
///
/// Deletes are unversioned: they remove documents the database does not
/// have, which no index job will bring back. (Deleting documents that the
/// database has and indexing them again would not work: a delete leaves a
/// tombstone with a higher internal version than the external one.)
pub fn bulk_delete(index: &str, chat: ChatKey, numbers: &[i64]) -> String {
    let mut out = String::with_capacity(numbers.len() * 80);
    let routing = routing(chat);
    for n in numbers {
        let id = format!("{}:{n}", chat.term());
        let action = json!({ "delete": { "_index": index, "_id": id, "routing": routing } });
        out.push_str(&action.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(number: i64, version: i64, body: &str) -> MessageRow {
        let t = chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        MessageRow {
            application_id: 7,
            chat_number: 3,
            number,
            body: body.into(),
            version,
            created_at: t,
            updated_at: t,
        }
    }

    const CHAT: ChatKey = ChatKey {
        application_id: 7,
        chat_number: 3,
    };

    #[test]
    fn search_filters_to_the_chat_and_requires_every_word() {
        let q = search(CHAT, "  hel  wor ", 20, None);
        assert_eq!(q["size"], 21);
        assert_eq!(
            q["query"]["bool"]["filter"],
            json!([{ "term": { "chat": "7:3" } }])
        );
        let must = q["query"]["bool"]["must"].as_array().unwrap();
        assert_eq!(must.len(), 2);
        assert_eq!(must[0]["multi_match"]["query"], "hel");
        assert_eq!(must[1]["multi_match"]["query"], "wor");
        assert_eq!(must[0]["multi_match"]["operator"], "and");
        assert_eq!(
            must[0]["multi_match"]["fields"],
            json!(["body", "body.prefix", "body.infix"])
        );
        assert_eq!(
            q["sort"],
            json!([{ "_score": "desc" }, { "number": "desc" }])
        );
        assert!(q.get("search_after").is_none());
    }

    #[test]
    fn the_next_page_resumes_after_the_cursor() {
        let c = Cursor {
            score: 1.5,
            number: 9,
        };
        let q = search(CHAT, "x", 5, Some(c));
        assert_eq!(q["search_after"], json!([1.5, 9]));
    }

    #[test]
    fn bulk_is_ndjson_action_then_source_with_external_versions() {
        let body = bulk("chat-messages", &[row(1, 4, "hi"), row(2, 5, "a\nb")]);
        assert!(body.ends_with('\n'), "bulk bodies end with a newline");
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "a newline inside a body stays escaped");
        assert_eq!(
            lines[0],
            json!({ "index": { "_index": "chat-messages", "_id": "7:3:1", "routing": "7:3", "version": 4, "version_type": "external" } })
        );
        assert_eq!(lines[1]["body"], "hi");
        assert_eq!(lines[1]["chat"], "7:3");
        assert_eq!(lines[1]["created_at"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(lines[3]["body"], "a\nb");
    }

    #[test]
    fn deletes_are_one_action_line_each_without_a_source() {
        let body = bulk_delete("a", CHAT, &[4, 5]);
        assert!(body.ends_with('\n'));
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                json!({ "delete": { "_index": "a", "_id": "7:3:4", "routing": "7:3" } }),
                json!({ "delete": { "_index": "a", "_id": "7:3:5", "routing": "7:3" } })
            ]
        );
        let page = numbers(CHAT, Some(10), 100);
        assert_eq!(page["search_after"], json!([10]));
        assert_eq!(page["sort"], json!([{ "number": "asc" }]));
    }

    #[test]
    fn every_action_of_a_batch_routes_by_its_own_chat() {
        let mut other = row(1, 1, "x");
        other.application_id = 8;
        other.chat_number = 1;
        let body = bulk("i", &[row(1, 1, "a"), other, row(2, 1, "b")]);
        let routings: Vec<Value> = body
            .lines()
            .step_by(2)
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["index"]["routing"].clone())
            .collect();
        assert_eq!(routings, [json!("7:3"), json!("8:1"), json!("7:3")]);
        assert_eq!(routing(CHAT), "7:3");
    }

    #[test]
    fn counts_aggregate_only_the_asked_chats() {
        let other = ChatKey {
            application_id: 8,
            chat_number: 1,
        };
        let q = counts(&[CHAT, other]);
        assert_eq!(q["size"], 0);
        assert_eq!(q["query"]["terms"]["chat"], json!(["7:3", "8:1"]));
        assert_eq!(q["aggs"]["per_chat"]["terms"]["size"], 2);
    }
}
