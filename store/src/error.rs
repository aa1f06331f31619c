use thiserror::Error;

/// Failures of the storage layer. Callers branch on `NotFound` and
/// `Unavailable`; everything else is an internal error to them.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("search: {0}")]
    Search(String),
    /// A rate limit folded into the write refused it; nothing was written.
    /// The verdict is with the caller of `ratelimit::folded::within`.
    #[error("rate limited")]
    RateLimited,
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Whether the failure is a backend being out of reach (worth a 503 and
    /// a retry) rather than a fault in the request or the code.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Db(sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_)) => true,
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
            }
            _ => false,
        }
    }
}
