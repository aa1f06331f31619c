//! The OpenAPI document and the router cannot drift: every route the
//! router serves is documented, and every documented operation is served.
use std::collections::BTreeSet;
use std::time::Duration;

use chat::backends::{Backends, BackendsConfig};
use chat_api::{ApiConfig, AppState, openapi};
use chat_search::SearchConfig;

const METHODS: [&str; 9] = [
    "get", "head", "delete", "options", "patch", "post", "put", "trace", "connect",
];

/// The router's own route table, read from its `Debug` rendering: axum
/// offers no other view of it. Each route prints as
/// `RouteId(n): MethodRouter(MethodRouter { get: …, head: …, … })` and
/// each path as `RouteId(n): "/path"`. A change in that rendering fails
/// the tests below rather than passing them: they require the known
/// routes to be found.
fn served_routes(router: &axum::Router) -> BTreeSet<(String, String)> {
    let debug = format!("{router:?}");
    // Route ids restart in the fallback router, which serves no route.
    let (debug, _) = debug
        .split_once(", fallback_router: ")
        .expect("the router's Debug rendering changed shape");
    let mut paths = std::collections::HashMap::new();
    let mut methods = std::collections::HashMap::new();
    for chunk in debug.split("RouteId(").skip(1) {
        let Some((id, rest)) = chunk.split_once("): ") else {
            continue;
        };
        if let Some(path) = rest.strip_prefix('"') {
            paths.insert(id.to_owned(), path[..path.find('"').unwrap()].to_owned());
        } else if let Some(fields) = rest.strip_prefix("MethodRouter(MethodRouter { ") {
            let mut served = Vec::new();
            for field in fields.split(", ").take(METHODS.len()) {
                let (name, value) = field.split_once(": ").unwrap();
                assert!(
                    METHODS.contains(&name),
                    "unexpected field {name} in {field}"
                );
                if value != "None" {
                    served.push(name.to_owned());
                }
            }
            methods.insert(id.to_owned(), served);
        }
    }
    let mut routes = BTreeSet::new();
    for (id, path) in paths {
        // axum's own catch-alls for fallbacks and nesting.
        if path.contains("__private__axum") {
            continue;
        }
        for method in methods.get(&id).into_iter().flatten() {
            routes.insert((method.clone(), path.clone()));
        }
    }
    routes
}

fn documented_routes(doc: &utoipa::openapi::OpenApi) -> BTreeSet<(String, String)> {
    let json = serde_json::to_value(doc).unwrap();
    let mut routes = BTreeSet::new();
    for (path, item) in json["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                routes.insert((method.to_owned(), path.clone()));
            }
        }
    }
    routes
}

/// A test's data directory, removed when the test ends.
struct DataDir(std::path::PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn state() -> (AppState, Backends, DataDir) {
    let dir = std::env::temp_dir().join(format!("chat-openapi-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let backends = Backends::open(&BackendsConfig {
        database_url: format!("sqlite://{}?mode=rwc", dir.join("chat.db").display()),
        redis_url: None,
        redis_prefix: String::new(),
        redis_shards: 1,
        claim_idle: Duration::from_secs(30),
        pending_ttl: Duration::from_secs(60),
        jobs_done_max: 100,
        idempotency_retention: Duration::from_secs(3600),
        search: SearchConfig::Embedded {
            dir: dir.join("search"),
        },
    })
    .await
    .unwrap();
    let config = ApiConfig {
        max_message_bytes: 1024,
        rate_limits: Default::default(),
        overload: Default::default(),
        cors_origins: Vec::new(),
    };
    (
        AppState::new(backends.api(), config),
        backends,
        DataDir(dir),
    )
}

#[tokio::test]
async fn the_document_lists_every_route_the_router_serves() {
    let (state, backends, _dir) = state().await;
    // What `chat serve` mounts from this crate; the dashboard's `/admin`
    // is an operator UI, not part of the API.
    let router = chat_api::router(state).merge(chat_api::metrics::router(backends.observed()));
    let served: BTreeSet<_> = served_routes(&router)
        .into_iter()
        .filter(|(_, path)| !path.starts_with(openapi::UI_PATH) && path != openapi::DOCUMENT_PATH)
        .collect();
    let documented = documented_routes(&openapi::document());

    assert!(
        served.len() >= 18,
        "the router's Debug rendering changed shape: found only {served:?}"
    );
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
}

#[tokio::test]
async fn the_route_table_reader_sees_an_undocumented_route() {
    // The check above is only as good as `served_routes`: a plain axum
    // route added beside the documented ones must show up in it.
    let (state, _, _dir) = state().await;
    let router = chat_api::router(state).route(
        "/api/v1/undocumented",
        axum::routing::delete(|| async { "" }),
    );
    let served = served_routes(&router);
    assert!(served.contains(&("delete".to_owned(), "/api/v1/undocumented".to_owned())));
    assert!(served.contains(&("post".to_owned(), "/api/v1/applications".to_owned())));
    let documented = documented_routes(&openapi::document());
    assert!(!documented.contains(&("delete".to_owned(), "/api/v1/undocumented".to_owned())));
}

#[test]
fn every_operation_documents_its_problems_and_encodings() {
    let doc = serde_json::to_value(openapi::document()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let post = &doc["paths"]["/api/v1/applications/{token}/chats/{number}/messages"]["post"];
    let mut statuses: Vec<_> = post["responses"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            "201", "400", "404", "409", "413", "415", "422", "429", "500", "503"
        ]
    );
    let key = post["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .expect("every write takes an Idempotency-Key");
    assert_eq!(
        (&key["in"], &key["required"]),
        (&"header".into(), &false.into())
    );
    assert!(
        post["responses"]["409"]["headers"]
            .get("Retry-After")
            .is_some(),
        "409 says when to send again"
    );
    let problem = &post["responses"]["429"];
    assert_eq!(
        problem["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    for header in [
        "Retry-After",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "x-request-id",
    ] {
        assert!(
            problem["headers"].get(header).is_some(),
            "429 lacks {header}"
        );
    }
    let encodings: Vec<_> = post["requestBody"]["content"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        encodings.len(),
        3,
        "JSON, form and multipart bodies are all accepted: {encodings:?}"
    );
    // Every operation id is unique, so tools can name each one.
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            if let Some(id) = op.get("operationId") {
                assert!(
                    ids.insert(id.as_str().unwrap().to_owned()),
                    "duplicate {id}"
                );
            }
        }
    }
    assert!(ids.len() >= 18);
}

/// Every `pattern` in the document, wherever it sits.
fn patterns(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("pattern", serde_json::Value::String(p)) => found.push(p.clone()),
                    _ => patterns(v, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| patterns(v, found)),
        _ => {}
    }
}

/// JSON Schema patterns are unanchored, but some readers anchor them:
/// schemathesis folds `minLength`/`maxLength` into a pattern as
/// `^…{min,max}$`, which turned "not blank" (`\S`) into "no whitespace at
/// all" and made it report names with spaces as accepted invalid input.
/// A pattern that starts and ends with `[\s\S]*` means the same anchored
/// or not.
#[test]
fn every_pattern_means_the_same_anchored_or_not() {
    let mut found = Vec::new();
    patterns(
        &serde_json::to_value(openapi::document()).unwrap(),
        &mut found,
    );
    assert!(found.len() >= 6, "the not-blank rules are gone: {found:?}");
    for p in found {
        assert!(
            p.starts_with(r"[\s\S]*") && p.ends_with(r"[\s\S]*"),
            "pattern {p:?} changes meaning when anchored"
        );
    }
}
