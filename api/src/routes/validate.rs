//! Field rules shared by the write routes.
use crate::error::ApiError;

pub const MAX_NAME_CHARS: usize = 255;

/// A required name: present, not blank, at most 255 characters.
pub fn required_name(name: Option<String>) -> Result<String, ApiError> {
    match name {
        None => Err(ApiError::Unprocessable("name is required".into())),
        Some(n) => optional_name(Some(n)).map(|n| n.unwrap_or_default()),
    }
}

/// An optional name: when present, not blank and at most 255 characters.
pub fn optional_name(name: Option<String>) -> Result<Option<String>, ApiError> {
    match name {
        Some(n) if n.trim().is_empty() => {
            Err(ApiError::Unprocessable("name must not be empty".into()))
        }
        Some(n) if n.chars().count() > MAX_NAME_CHARS => Err(ApiError::Unprocessable(format!(
            "name must be at most {MAX_NAME_CHARS} characters"
        ))),
        other => Ok(other),
    }
}

/// A message body: present, not blank, at most `max_bytes` bytes. The body
/// is kept byte for byte; blankness is only checked, never trimmed away.
pub fn body(body: Option<String>, max_bytes: usize) -> Result<String, ApiError> {
    match body {
        None => Err(ApiError::Unprocessable("body is required".into())),
        Some(b) if b.trim().is_empty() => {
            Err(ApiError::Unprocessable("body must not be empty".into()))
        }
        Some(b) if b.len() > max_bytes => Err(ApiError::PayloadTooLarge(format!(
            "body is {} bytes; the limit is {max_bytes}",
            b.len()
        ))),
        Some(b) => Ok(b),
    }
}
