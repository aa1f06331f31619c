//! Job payloads as operators see them. A payload names its application by
//! the internal `application_id`, which must not leave the server; the
//! operator sees the application's name and its token cut to 4
//! characters instead, which is enough to tell applications apart and to
//! match a complaint, and reveals nothing a client could use.
use std::collections::HashMap;

use chat_store::{Backends, repo::applications};
use serde_json::{Value, json};

use crate::error::DashError;

const INTERNAL_KEY: &str = "application_id";
const SHOWN_KEY: &str = "application";

/// Each payload with every `application_id` replaced by its application;
/// a payload that is not JSON is shown as it is.
pub(crate) async fn for_operators(
    backends: &Backends,
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
    let shown: HashMap<i64, Value> = applications::find_by_ids(&backends.db, &ids)
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
}
