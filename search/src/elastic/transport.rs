//! Requests to Elasticsearch: each bounded by a timeout, and an answer that
//! says whether the cluster was out of reach (an outage) or refused the
//! request.
use super::*;

/// A hung node must not hold an index job for long: the request fails as
/// an outage, and the index workers pause until the node answers.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of one request: its status and JSON body.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Value,
}

impl Reply {
    pub(super) fn ok(self, what: &str) -> Result<Value> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        let message = format!("{what}: {} {}", self.status, self.body);
        // Overloaded or failing nodes pass; anything else is about the
        // request.
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.status.is_server_error() {
            Err(StoreError::SearchUnavailable(message))
        } else {
            Err(StoreError::Search(message))
        }
    }

    pub(super) fn error_type(&self) -> Option<&str> {
        self.body["error"]["type"].as_str()
    }
}

impl Elastic {
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Reply> {
        self.send_with(method, path, &[], body).await
    }

    pub(super) async fn send_with(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<Reply> {
        let mut headers = HeaderMap::new();
        if path.ends_with("_bulk") {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
        }
        let response = self
            .client
            .send(
                method,
                path,
                headers,
                (!query.is_empty()).then_some(query),
                body,
                None,
            )
            .await
            .map_err(|e| StoreError::Unavailable(format!("elasticsearch: {e}")))?;
        let status = response.status_code();
        let text = response
            .text()
            .await
            .map_err(|e| StoreError::Unavailable(format!("elasticsearch: {e}")))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply { status, body })
    }
}
