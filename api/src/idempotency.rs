//! `Idempotency-Key` on every POST, PUT and PATCH under `/api/v1`, after
//! the IETF httpapi draft (draft-ietf-httpapi-idempotency-key-header).
//!
//! - The same key with the same request, within the retention (default
//!   24 h), answers the first response again, status, `Location` and body
//!   included, and writes nothing new.
//! - The same key with a different request (method, path, content type or
//!   body) answers 422.
//! - While a request under the key is running, another answers 409 with
//!   `Retry-After`.
//! - A run that ended without a response (the server failed, the outcome
//!   of its write is unknown, the process died) leaves the key free once
//!   it ends; the next request under it runs again, and any write the
//!   first run made is found in the record, not made twice.
//!
//! The key may be sent in the draft's quoted form (`"8e03…"`, a structured
//! field string) or bare, as many clients send it. Keys are scoped to the
//! application the path names, or to the creation of applications.
use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chat_store::idempotency::{self, Begin, IdempotencyStore, Key, Link, Scope, Stored};

use crate::{AppState, error::ApiError, input, overload, under_api};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Longest key accepted, in characters, as the draft's examples suggest.
const MAX_KEY: usize = 255;
/// Response headers replayed with the body.
const REPLAYED: [HeaderName; 2] = [header::CONTENT_TYPE, header::LOCATION];

/// The key the header carries, unquoted.
fn parse_key(value: &HeaderValue) -> Result<String, String> {
    let text = value
        .to_str()
        .map_err(|_| "Idempotency-Key must be printable ASCII".to_owned())?
        .trim();
    let quoted = text.starts_with('"') || text.ends_with('"');
    let key = if quoted {
        let inner = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .ok_or("Idempotency-Key has an unterminated quote")?;
        unescape(inner)?
    } else {
        text.to_owned()
    };
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(format!("Idempotency-Key must be 1 to {MAX_KEY} characters"));
    }
    if !key.chars().all(|c| (' '..='~').contains(&c)) {
        return Err("Idempotency-Key must be printable ASCII".into());
    }
    Ok(key)
}

/// A structured-field string's content: `\"` and `\\` are the only
/// escapes (RFC 8941, 3.3.3).
fn unescape(quoted: &str) -> Result<String, String> {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('"' | '\\')) => out.push(e),
                _ => return Err("Idempotency-Key has a bad escape".into()),
            },
            '"' => return Err("Idempotency-Key has an unescaped quote".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// What makes two requests the same request: method, path, content type
/// and body.
pub fn fingerprint(method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> String {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut all = Vec::with_capacity(body.len() + 128);
    for part in [method.as_str(), path, content_type] {
        all.extend_from_slice(part.as_bytes());
        all.push(0);
    }
    all.extend_from_slice(body);
    idempotency::digest(&all)
}

/// The application token a path under `/api/v1/applications/` names.
fn token_of(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix(crate::API_PREFIX)?
        .strip_prefix("/applications/")?;
    let token = rest.split('/').next()?;
    (!token.is_empty()).then_some(token)
}

/// How long a run holds its key: as long as the request may take, waiting
/// for a write's outcome included, and a margin.
fn lease(state: &AppState) -> Duration {
    state.config.overload.timeout + overload::OUTCOME_WAIT + Duration::from_secs(5)
}

pub(crate) async fn enforce(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let writes = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    if !writes || !under_api(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(value) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let client_key = match parse_key(value) {
        Ok(key) => key,
        Err(e) => return ApiError::BadRequest(e).into_response(),
    };
    let path = req.uri().path().to_owned();
    let scope = match token_of(&path) {
        Some(token) => match state.lookup.app_id(&state.deps, token).await {
            Ok(id) => Scope::Application(id),
            Err(e) => return e.into_response(),
        },
        None => Scope::Applications,
    };
    let (parts, body) = req.into_parts();
    let limit = input::body_limit(&state.config).0;
    let bytes = match input::read_body(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    let print = fingerprint(&parts.method, &path, &parts.headers, &bytes);
    let key = Key::new(scope, &client_key);
    let store = state.deps.idempotency.clone();
    let link = match store.begin(&key, &print, lease(&state)).await {
        Ok(Begin::Run(link)) => link,
        Ok(Begin::Replay(stored)) => return replay(stored),
        Ok(Begin::Busy) => {
            let mut response = ApiError::Conflict(
                "a request with this Idempotency-Key is in progress; retry when it ends".into(),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        Ok(Begin::Mismatch) => {
            return ApiError::Unprocessable(
                "this Idempotency-Key was used for a different request".into(),
            )
            .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut run = Run {
        store,
        link: Some(link.clone()),
    };
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(link);
    let response = next.run(req).await;
    run.finish(response).await
}

/// A run under a key; if it is dropped unfinished (its request timed out
/// and was cut off), the key's lease is released at once.
struct Run {
    store: std::sync::Arc<dyn IdempotencyStore>,
    link: Option<Link>,
}

impl Run {
    /// Stores a final response for replay, or releases the key after a
    /// failure that a later request under it should try again.
    async fn finish(&mut self, response: Response) -> Response {
        let Some(link) = self.link.take() else {
            return response;
        };
        let status = response.status();
        let again = status.is_server_error() || matches!(status.as_u16(), 408 | 409 | 429);
        if again {
            if let Err(e) = self.store.release(&link).await {
                tracing::warn!(error = %e, "could not release an idempotency key");
            }
            return response;
        }
        let (parts, body) = response.into_parts();
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, "could not read a response to store it");
                let _ = self.store.release(&link).await;
                return ApiError::Internal(e.to_string()).into_response();
            }
        };
        let stored = Stored {
            status: parts.status.as_u16(),
            headers: REPLAYED
                .iter()
                .filter_map(|name| {
                    let value = parts.headers.get(name)?.to_str().ok()?;
                    Some((name.as_str().to_owned(), value.to_owned()))
                })
                .collect(),
            body: bytes.to_vec(),
        };
        if let Err(e) = self.store.complete(&link, &stored).await {
            // The write stands; a request sent again finds it through the
            // record's accepted state once this run's lease is over.
            tracing::warn!(error = %e, "could not store a response for its Idempotency-Key");
        }
        Response::from_parts(parts, Body::from(bytes))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.release(&link).await {
                    tracing::warn!(error = %e, "could not release an idempotency key");
                }
            });
        }
    }
}

/// The first response again.
fn replay(stored: Stored) -> Response {
    let mut response = Response::new(Body::from(Bytes::from(stored.body)));
    *response.status_mut() =
        axum::http::StatusCode::from_u16(stored.status).unwrap_or(axum::http::StatusCode::OK);
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Result<String, String> {
        parse_key(&HeaderValue::from_str(text).unwrap())
    }

    #[test]
    fn quoted_and_bare_keys_are_the_same_key() {
        let uuid = "8e03978e-40d5-43e8-bc93-6894a57f9324";
        assert_eq!(key(&format!("\"{uuid}\"")).unwrap(), uuid);
        assert_eq!(key(uuid).unwrap(), uuid);
        assert_eq!(key(r#""a\"b\\c""#).unwrap(), r#"a"b\c"#);
    }

    #[test]
    fn empty_long_or_badly_escaped_keys_are_refused() {
        assert!(key("\"\"").is_err());
        assert!(key(&"k".repeat(256)).is_err());
        assert!(key(&"k".repeat(255)).is_ok());
        assert!(key(r#""a\nb""#).is_err());
        assert!(key(r#""a"b""#).is_err());
        assert!(key("\"unterminated").is_err());
    }

    #[test]
    fn a_different_body_path_or_method_is_a_different_request() {
        let h = HeaderMap::new();
        let base = fingerprint(&Method::POST, "/api/v1/a", &h, b"{}");
        assert_eq!(base, fingerprint(&Method::POST, "/api/v1/a", &h, b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/api/v1/a", &h, b"{ }"));
        assert_ne!(base, fingerprint(&Method::PUT, "/api/v1/a", &h, b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/api/v1/b", &h, b"{}"));
    }

    #[test]
    fn the_token_is_read_from_the_path() {
        assert_eq!(token_of("/api/v1/applications/abc/chats"), Some("abc"));
        assert_eq!(token_of("/api/v1/applications/abc"), Some("abc"));
        assert_eq!(token_of("/api/v1/applications"), None);
    }
}
