//! Job payloads as operators see them. A payload names its application by
//! the internal `application_id`, which must not leave the server; the
//! operator sees the application's name and its token cut to 4
//! characters instead, which is enough to tell applications apart and to
//! match a complaint, and reveals nothing a client could use.
use std::collections::HashMap;

use chat_store::repo::applications;

use crate::DashboardDeps;
use serde_json::{Value, json};

use crate::error::DashError;

const INTERNAL_KEY: &str = "application_id";
const SHOWN_KEY: &str = "application";

/// Each payload with every `application_id` replaced by its application;
/// a payload that is not JSON is shown as it is.
pub(crate) async fn for_operators(
    deps: &DashboardDeps,
    payloads: &[&str],
) -> Result<Vec<String>, DashError> {
    let mut values: Vec<Option<Value>> = payloads
        .iter()
        .map(|p| serde_json::from_str(p).ok())
        .collect();
    let mut ids = Vec::new();
    for value in values.iter().flatten() {
        collect_ids(value, &mut ids);
    }
    ids.sort_unstable();
    ids.dedup();
    let shown: HashMap<i64, Value> = applications::find_by_ids(&deps.db, &ids)
        .await?
        .into_iter()
        .map(|a| {
            let shown = json!({ "name": a.name, "token": applications::shown_token(&a.token) });
            (a.id, shown)
        })
        .collect();
    Ok(values
        .iter_mut()
        .zip(payloads)
        .map(|(value, raw)| match value {
            Some(value) => {
                replace_ids(value, &shown);
                value.to_string()
            }
            None => (*raw).to_owned(),
        })
        .collect())
}

fn collect_ids(value: &Value, ids: &mut Vec<i64>) {
    match value {
        Value::Object(map) => {
            if let Some(id) = map.get(INTERNAL_KEY).and_then(Value::as_i64) {
                ids.push(id);
            }
            map.values().for_each(|v| collect_ids(v, ids));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_ids(v, ids)),
        _ => {}
    }
}

fn replace_ids(value: &mut Value, shown: &HashMap<i64, Value>) {
    match value {
        Value::Object(map) => {
            if let Some(id) = map.remove(INTERNAL_KEY) {
                let application = id
                    .as_i64()
                    .and_then(|id| shown.get(&id).cloned())
                    .unwrap_or_else(|| json!({ "name": null, "token": null }));
                map.insert(SHOWN_KEY.to_owned(), application);
            }
            map.values_mut().for_each(|v| replace_ids(v, shown));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| replace_ids(v, shown)),
        _ => {}
    }
}

/// Characters of a message body a list row shows.
const BODY_START: usize = 40;

/// A shown payload's key fields, for a list row: the application, the
/// chat, the message number and the start of its body; for an index
/// batch, its first row and how many it holds.
pub(crate) fn summary(shown: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(shown) else {
        return shown.chars().take(BODY_START).collect();
    };
    match &value {
        Value::Array(rows) => match rows.first() {
            Some(first) => format!("{} rows, from {}", rows.len(), one_row(first)),
            None => "no rows".to_owned(),
        },
        row => one_row(row),
    }
}

fn one_row(row: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(app) = row.get(SHOWN_KEY) {
        let name = app.get("name").and_then(Value::as_str).unwrap_or("?");
        let token = app.get("token").and_then(Value::as_str).unwrap_or("?");
        parts.push(format!("{name} ({token})"));
    }
    let number = row.get("number").and_then(Value::as_i64);
    match row.get("chat_number").and_then(Value::as_i64) {
        Some(chat) => {
            parts.push(format!("chat {chat}"));
            if let Some(n) = number {
                parts.push(format!("message {n}"));
            }
        }
        None => {
            if let Some(n) = number {
                parts.push(format!("chat {n}"));
            }
        }
    }
    if let Some(body) = row.get("body").and_then(Value::as_str) {
        let start: String = body.chars().take(BODY_START).collect();
        let cut = if start.len() < body.len() { "…" } else { "" };
        parts.push(format!("“{start}{cut}”"));
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_replaced_everywhere_and_unknown_ones_name_nothing() {
        let shown = HashMap::from([(7, json!({ "name": "Acme", "token": "Zq3n…" }))]);
        let mut value = json!({
            "application_id": 7,
            "rows": [{ "application_id": 7, "number": 1 }, { "application_id": 8 }]
        });
        let mut ids = Vec::new();
        collect_ids(&value, &mut ids);
        assert_eq!(ids, [7, 7, 8]);
        replace_ids(&mut value, &shown);
        let text = value.to_string();
        assert!(!text.contains("application_id"), "{text}");
        assert_eq!(value["application"]["name"], "Acme");
        assert_eq!(value["rows"][0]["application"]["token"], "Zq3n…");
        assert_eq!(value["rows"][1]["application"]["name"], Value::Null);
    }

    #[test]
    fn a_summary_names_what_tells_jobs_apart() {
        let app = json!({ "name": "Acme", "token": "Zq3n…" });
        let message =
            json!({ "application": app, "chat_number": 4, "number": 17, "body": "x".repeat(50) });
        assert_eq!(
            summary(&message.to_string()),
            format!("Acme (Zq3n…) · chat 4 · message 17 · “{}…”", "x".repeat(40))
        );
        let chat = json!({ "application": app, "number": 3, "name": null });
        assert_eq!(summary(&chat.to_string()), "Acme (Zq3n…) · chat 3");
        let batch = json!([message, message]);
        assert!(summary(&batch.to_string()).starts_with("2 rows, from Acme"));
    }
}
