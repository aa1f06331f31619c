//! `Input<T>`: a write body in any of the accepted encodings.
//!
//! JSON, `application/x-www-form-urlencoded` and `multipart/form-data` are
//! all read into one flat object and then deserialized into `T`, so every
//! route validates one shape whatever the client sent. Rails-style keys
//! (`message[body]`) are accepted as their inner name (`body`), for the
//! clients of the system this one replaces.
use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Multipart, Request},
    http::header,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Largest request body read, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// A request body may be percent-encoded or wrapped in multipart, so the
/// transport limit leaves room above the message limit; the message limit
/// itself is checked on the decoded field.
pub(crate) fn body_limit(config: &crate::ApiConfig) -> BodyLimit {
    BodyLimit(config.max_message_bytes * 4 + 64 * 1024)
}

pub struct Input<T>(pub T);

enum Encoding {
    Json,
    Form,
    Multipart,
    Empty,
}

fn encoding(req: &Request) -> Result<Encoding, ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(Encoding::Empty);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("the Content-Type header is not valid text".into()))?;
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Encoding::Json),
        e if e.starts_with("application/") && e.ends_with("+json") => Ok(Encoding::Json),
        "application/x-www-form-urlencoded" => Ok(Encoding::Form),
        "multipart/form-data" => Ok(Encoding::Multipart),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "content type '{other}' is not accepted; send application/json, \
             application/x-www-form-urlencoded or multipart/form-data"
        ))),
    }
}

/// `message[body]` → `body`; plain keys are kept.
fn field_name(key: &str) -> String {
    match (key.rfind('['), key.strip_suffix(']')) {
        (Some(open), Some(_)) if open + 1 < key.len() - 1 => {
            key[open + 1..key.len() - 1].to_owned()
        }
        _ => key.to_owned(),
    }
}

/// Past the limit, this much more of a body is read and thrown away
/// before the 413 is sent, for at most [`DRAIN_TIME`]. A client that
/// sends its whole body before it reads (Python's urllib, say) otherwise
/// finds the connection closed under it and sees a broken pipe instead of
/// the 413; a larger body still gets the connection closed.
const DRAIN_MAX: usize = 16 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

async fn next_chunk(body: &mut Body) -> Option<Result<Bytes, axum::Error>> {
    use axum::body::HttpBody;
    loop {
        let frame =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

fn unreadable(e: &axum::Error) -> ApiError {
    ApiError::BadRequest(format!("the request body could not be read: {e}"))
}

/// Reads a whole body of at most `limit` bytes. A larger one is answered
/// 413, after reading the rest of it (see [`DRAIN_MAX`]).
pub(crate) async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut read: Vec<u8> = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await {
        let chunk = chunk.map_err(|e| unreadable(&e))?;
        if read.len() + chunk.len() > limit {
            let drained = chunk.len();
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                let mut drained = drained;
                while drained <= DRAIN_MAX {
                    match next_chunk(&mut body).await {
                        Some(Ok(chunk)) => drained += chunk.len(),
                        _ => return,
                    }
                }
            })
            .await;
            return Err(ApiError::PayloadTooLarge(format!(
                "the request body is larger than {limit} bytes"
            )));
        }
        read.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(read))
}

async fn multipart_fields(req: Request, limit: usize) -> Result<Map<String, Value>, ApiError> {
    // Read whole and bounded first, so a body over the limit gets its 413
    // the same way as any other (see `read_body`).
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, limit).await?;
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::BadRequest(format!("malformed multipart body: {e}")))?;
    let mut fields = Map::new();
    let mut total = 0usize;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::BadRequest(format!("malformed multipart body: {e}")))?
    {
        let Some(name) = field.name().map(field_name) else {
            continue;
        };
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::BadRequest(format!("malformed multipart field: {e}")))?;
        total += bytes.len();
        if total > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "the request body is larger than {limit} bytes"
            )));
        }
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::BadRequest(format!("field '{name}' is not UTF-8 text")))?;
        fields.insert(name, Value::String(text));
    }
    Ok(fields)
}

/// The body's fields; `None` when there was no body at all (no
/// Content-Type and no bytes).
async fn fields(req: Request) -> Result<Option<Map<String, Value>>, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .copied()
        .unwrap_or(BodyLimit(1024 * 1024))
        .0;
    let object = match encoding(&req)? {
        Encoding::Json => {
            let bytes = read_body(req.into_body(), limit).await?;
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
            match value {
                Value::Object(map) => map,
                _ => {
                    return Err(ApiError::Unprocessable(
                        "the body must be a JSON object".into(),
                    ));
                }
            }
        }
        Encoding::Form => {
            let bytes = read_body(req.into_body(), limit).await?;
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
                .map_err(|e| ApiError::BadRequest(format!("malformed form body: {e}")))?;
            pairs
                .into_iter()
                .map(|(k, v)| (field_name(&k), Value::String(v)))
                .collect()
        }
        Encoding::Multipart => multipart_fields(req, limit).await?,
        Encoding::Empty => {
            let bytes = read_body(req.into_body(), limit).await?;
            if !bytes.is_empty() {
                return Err(ApiError::UnsupportedMediaType(
                    "a request body needs a Content-Type header".into(),
                ));
            }
            return Ok(None);
        }
    };
    Ok(Some(object))
}

fn typed<T: DeserializeOwned>(object: Map<String, Value>) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(object))
        .map_err(|e| ApiError::Unprocessable(format!("invalid fields: {e}")))
}

impl<S, T> FromRequest<S> for Input<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    /// No body at all reads as no fields.
    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        typed(fields(req).await?.unwrap_or_default()).map(Input)
    }
}

/// Like [`Input`], but tells a request with no body at all (`None`) from
/// one whose body has no fields.
pub struct MaybeInput<T>(pub Option<T>);

impl<S, T> FromRequest<S> for MaybeInput<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        fields(req).await?.map(typed).transpose().map(MaybeInput)
    }
}

#[cfg(test)]
mod tests {
    use super::field_name;

    #[test]
    fn rails_style_keys_become_their_inner_name() {
        assert_eq!(field_name("message[body]"), "body");
        assert_eq!(field_name("body"), "body");
        assert_eq!(field_name("odd[]"), "odd[]");
    }
}
