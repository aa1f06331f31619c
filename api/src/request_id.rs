//! `X-Request-Id` on every response: the client's own, when it sent a
//! sane one, or a fresh one, so a report can quote it and it can be found
//! in the logs and on the request's span
//! (`http.request.header.x-request-id`).
use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A client's id is kept when it is 1 to 128 characters of letters,
/// digits and `-_.:`; anything else could poison logs.
fn acceptable(id: &HeaderValue) -> bool {
    let b = id.as_bytes();
    (1..=128).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// Outermost, so the request carries its id inward: the request span
/// records it, and with it every log line written while handling it.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .filter(|id| acceptable(id))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string())
                .expect("hex is a valid header value")
        });
    req.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
    let mut response = next.run(req).await;
    response.headers_mut().insert(REQUEST_ID_HEADER, id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_client_ids_are_kept() {
        assert!(acceptable(&HeaderValue::from_static("abc-123_x.y:z")));
        assert!(!acceptable(&HeaderValue::from_static("")));
        assert!(!acceptable(&HeaderValue::from_static("a b")));
        assert!(!acceptable(
            &HeaderValue::from_str(&"x".repeat(129)).unwrap()
        ));
    }
}
