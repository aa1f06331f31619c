//! Indexing a batch of rows in one `_bulk` request, with external versions,
//! so an older version never replaces a newer one.
use super::*;

impl Elastic {
    pub(super) async fn bulk(&self, index: &str, rows: &[MessageRow]) -> Result<()> {
        // A CLIENT span per the OpenTelemetry Elasticsearch conventions.
        let span = tracing::info_span!(
            "_bulk",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = "elasticsearch",
            db.operation.name = "bulk",
            db.operation.batch.size = rows.len() as i64,
            http.request.method = "POST",
        );
        // Writes through the alias require it to be an alias: on a wiped
        // cluster, a write to the bare name would otherwise create a
        // concrete index of that name with a guessed mapping.
        let query: &[(&str, &str)] = if index == self.alias {
            &[("require_alias", "true")]
        } else {
            &[]
        };
        let reply = self
            .send_with(Method::Post, "/_bulk", query, Some(dsl::bulk(index, rows)))
            .instrument(span.clone())
            .await;
        let body = reply.and_then(|r| r.ok("bulk"));
        if body.is_err() {
            span.record("otel.status_code", "error");
        }
        let body = body?;
        if body["errors"] != Value::Bool(true) {
            return Ok(());
        }
        let mut missing_index = false;
        let mut overloaded = false;
        let mut failures = Vec::new();
        for item in body["items"].as_array().into_iter().flatten() {
            let result = &item["index"];
            let status = result["status"].as_u64().unwrap_or(0);
            match status {
                200..=299 => {}
                // The index holds an equal or newer version: nothing to do.
                409 => {}
                _ => {
                    if result["error"]["type"] == "index_not_found_exception" {
                        missing_index = true;
                    }
                    overloaded |= status == 429 || status >= 500;
                    failures.push(result["error"].to_string());
                }
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        if missing_index {
            self.ensured.store(false, Ordering::Relaxed);
        }
        let message = format!(
            "bulk: {} of {} documents failed, first: {}",
            failures.len(),
            rows.len(),
            failures[0]
        );
        // A wiped cluster (the alias gone) or an overloaded one is an
        // outage: the next `ensure` recreates the index, and the jobs wait
        // without spending attempts.
        if missing_index || overloaded {
            Err(StoreError::SearchUnavailable(message))
        } else {
            Err(StoreError::Search(message))
        }
    }
}
