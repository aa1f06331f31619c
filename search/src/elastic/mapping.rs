//! The index template: analyzers and mapping of every generation.
//!
//! `body` is analysed three ways:
//! - `body` itself with `chat_words` (standard tokenizer, lowercase,
//!   asciifolding, arabic_normalization), so a whole word of any length
//!   matches;
//! - `body.prefix` with `chat_prefix`, which adds the 1- and 2-character
//!   edge n-grams of each word, for short query words;
//! - `body.infix` with `chat_infix`, which adds every 3- to 20-character
//!   n-gram, for prefixes and infixes of at least 3 characters.
//!
//! Query words are analysed with `chat_words` only (`search_analyzer`), so a
//! query word is looked up whole among a field's n-grams. These are the same
//! rules the embedded backend follows in `search::text`, except that a
//! query word longer than [`MAX_GRAM`] matches here only as a whole word.
use serde_json::{Value, json};

/// The longest n-gram indexed: a query word longer than this matches only
/// a whole word.
pub const MAX_GRAM: usize = 20;

/// The analyzer queries run through.
pub const SEARCH_ANALYZER: &str = "chat_words";
/// Fields a query word is matched against.
pub const SEARCH_FIELDS: [&str; 3] = ["body", "body.prefix", "body.infix"];

/// The pattern of the concrete indices behind `alias`.
pub fn pattern(alias: &str) -> String {
    format!("{alias}-*")
}

/// Character filters that spell out part of `arabic_normalization` before
/// tokenising: tashkeel and tatweel removed, hamza-seated alef, alef
/// maksura and teh marbuta folded. Elasticsearch's filter does this too;
/// doing it here as well keeps Arabic searchable on OpenSearch-compatible
/// servers whose indexing skips that filter (the CI emulator).
const CHAR_FILTERS: [&str; 4] = ["ar_strip", "ar_alef", "ar_yeh", "ar_heh"];

fn char_filters() -> Value {
    let replace = |pattern: &str, replacement: &str| json!({ "type": "pattern_replace", "pattern": pattern, "replacement": replacement });
    json!({
        "ar_strip": replace("[\u{064B}-\u{0652}\u{0640}]", ""),
        "ar_alef": replace("[\u{0622}\u{0623}\u{0625}\u{0671}]", "\u{0627}"),
        "ar_yeh": replace("\u{0649}", "\u{064A}"),
        "ar_heh": replace("\u{0629}", "\u{0647}"),
    })
}

fn analyzer(extra: Option<&str>) -> Value {
    let mut filter = vec!["lowercase", "asciifolding", "arabic_normalization"];
    filter.extend(extra);
    json!({
        "type": "custom",
        "char_filter": CHAR_FILTERS,
        "tokenizer": "standard",
        "filter": filter
    })
}

/// The template of `alias`'s generations, each with `shards` primary
/// shards. A template applies only when an index is created, so a new
/// count takes effect at the next rebuild (`chat reindex`); the live
/// generation keeps the count it was created with.
pub fn template(alias: &str, shards: u32) -> Value {
    json!({
        "index_patterns": [pattern(alias)],
        "priority": 200,
        "template": {
            "settings": {
                "number_of_shards": shards,
                // ngram filters refuse a span wider than this by default (1).
                "max_ngram_diff": MAX_GRAM - 3,
                "analysis": {
                    "char_filter": char_filters(),
                    "filter": {
                        "chat_prefix": { "type": "edge_ngram", "min_gram": 1, "max_gram": 2 },
                        "chat_infix": { "type": "ngram", "min_gram": 3, "max_gram": MAX_GRAM }
                    },
                    "analyzer": {
                        "chat_words": analyzer(None),
                        "chat_prefix": analyzer(Some("chat_prefix")),
                        "chat_infix": analyzer(Some("chat_infix"))
                    }
                }
            },
            "mappings": {
                // A write or delete that forgot the chat's routing would
                // land on (or look on) the wrong shard and go unnoticed:
                // a misplaced copy, or a delete answered 404. Refused
                // instead.
                "_routing": { "required": true },
                "dynamic": "strict",
                "properties": {
                    "chat": { "type": "keyword" },
                    "application_id": { "type": "long" },
                    "chat_number": { "type": "long" },
                    "number": { "type": "long" },
                    "version": { "type": "long", "index": false },
                    "body": {
                        "type": "text",
                        "analyzer": "chat_words",
                        "fields": {
                            "prefix": {
                                "type": "text",
                                "analyzer": "chat_prefix",
                                "search_analyzer": SEARCH_ANALYZER
                            },
                            "infix": {
                                "type": "text",
                                "analyzer": "chat_infix",
                                "search_analyzer": SEARCH_ANALYZER
                            }
                        }
                    },
                    "created_at": { "type": "date", "index": false },
                    "updated_at": { "type": "date", "index": false }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_matches_every_generation_of_the_alias() {
        let t = template("chat-messages", 1);
        assert_eq!(t["index_patterns"], json!(["chat-messages-*"]));
        // Composable templates (ES 7.8+) nest settings under `template`.
        assert!(t["template"]["settings"]["analysis"].is_object());
        assert!(t.get("settings").is_none(), "not a legacy template");
    }

    #[test]
    fn the_shard_count_is_the_configured_one_and_routing_is_required() {
        for shards in [1, 6] {
            let t = template("a", shards);
            assert_eq!(t["template"]["settings"]["number_of_shards"], json!(shards));
            assert_eq!(
                t["template"]["mappings"]["_routing"],
                json!({ "required": true })
            );
        }
    }

    #[test]
    fn ngram_spans_fit_max_ngram_diff() {
        let t = template("a", 1);
        let settings = &t["template"]["settings"];
        let diff = settings["max_ngram_diff"].as_u64().unwrap();
        for f in settings["analysis"]["filter"].as_object().unwrap().values() {
            let span = f["max_gram"].as_u64().unwrap() - f["min_gram"].as_u64().unwrap();
            assert!(span <= diff, "{f}");
        }
    }

    #[test]
    fn subfields_index_ngrams_but_search_whole_words() {
        let t = template("a", 1);
        let analysis = &t["template"]["settings"]["analysis"];
        let body = &t["template"]["mappings"]["properties"]["body"];
        for (sub, filter) in [("prefix", "chat_prefix"), ("infix", "chat_infix")] {
            let field = &body["fields"][sub];
            assert_eq!(field["search_analyzer"], SEARCH_ANALYZER);
            let analyzer = &analysis["analyzer"][field["analyzer"].as_str().unwrap()];
            assert_eq!(
                analyzer["filter"].as_array().unwrap().last().unwrap(),
                filter
            );
        }
        // Every analyzer folds case, diacritics and Arabic forms first.
        for a in analysis["analyzer"].as_object().unwrap().values() {
            assert_eq!(a["tokenizer"], "standard");
            for f in a["char_filter"].as_array().unwrap() {
                let def = &analysis["char_filter"][f.as_str().unwrap()];
                assert_eq!(def["type"], "pattern_replace", "{f}");
            }
            assert_eq!(
                a["filter"].as_array().unwrap()[..3],
                [
                    json!("lowercase"),
                    json!("asciifolding"),
                    json!("arabic_normalization")
                ]
            );
        }
        for f in SEARCH_FIELDS {
            let path: Vec<&str> = f.split('.').collect();
            let mapped = match path[..] {
                [top] => &t["template"]["mappings"]["properties"][top],
                [top, sub] => &t["template"]["mappings"]["properties"][top]["fields"][sub],
                _ => unreachable!(),
            };
            assert_eq!(mapped["type"], "text", "{f}");
        }
    }
}
