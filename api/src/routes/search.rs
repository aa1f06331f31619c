//! `GET /applications/{token}/chats/{number}/messages/search?q=&limit=&after=`.
use axum::{
    Json,
    extract::{FromRequestParts, State},
    http::request::Parts,
};
use chat_search as search;
use chat_search::{ChatKey, Cursor};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    error::{ApiError, Problem},
    params::{ChatPath, Segments, limit_in, query_of},
    views::MessageJson,
};

pub const DEFAULT_LIMIT: u64 = 20;
pub const MAX_LIMIT: u64 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

/// The query string, as OpenAPI sees it; [`SearchQuery`] reads it.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "only describes the query to OpenAPI")]
struct SearchParams {
    /// Text to find in message bodies, matched by partial words (at most
    /// 32 words).
    #[param(min_length = 1, pattern = r"[\s\S]*\S[\s\S]*")]
    q: String,
    /// Hits per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<usize>,
    /// The `next_after` of the previous page.
    #[param(min_length = 1)]
    after: Option<String>,
}

/// The query string, validated.
struct SearchQuery {
    q: String,
    limit: usize,
    after: Option<Cursor>,
}

#[derive(Deserialize)]
struct RawSearch {
    q: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for SearchQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw: RawSearch = query_of(parts, state).await?;
        let q = raw.q.unwrap_or_default();
        if q.trim().is_empty() {
            return Err(ApiError::Unprocessable(
                "q must contain something to search for".into(),
            ));
        }
        let words = search::query_word_count(&q);
        if words > search::MAX_QUERY_WORDS {
            return Err(ApiError::Unprocessable(format!(
                "q holds {words} words; a search takes at most {}",
                search::MAX_QUERY_WORDS
            )));
        }
        let limit = limit_in(raw.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)? as usize;
        // An empty `after=` is refused: the document types it as a non-empty cursor.
        let after = match raw.after.as_deref() {
            None => None,
            Some(s) => Some(Cursor::decode(s).ok_or_else(|| {
                ApiError::BadRequest(
                    "after must be a next_after value from a previous search".into(),
                )
            })?),
        };
        Ok(SearchQuery { q, limit, after })
    }
}

/// One page of hits, best first.
#[derive(Serialize, ToSchema)]
#[schema(as = SearchResults)]
struct SearchJson {
    items: Vec<MessageJson>,
    /// Pass as `after` for the next page; null on the last page.
    next_after: Option<String>,
}

/// Finds a chat's messages whose body contains the query.
#[utoipa::path(
    get,
    path = "/applications/{token}/chats/{number}/messages/search",
    tag = "messages",
    operation_id = "searchMessages",
    params(ChatPath, SearchParams),
    responses(
        (status = 200, description = "A page of hits", body = SearchJson),
        (status = 422, description = "`q` is blank, or holds more than 32 words", body = Problem,
            content_type = "application/problem+json"),
    )
)]
async fn search(
    State(state): State<AppState>,
    path: Segments,
    query: SearchQuery,
) -> Result<Json<SearchJson>, ApiError> {
    let (application_id, chat_number) = super::messages::chat_of(&state, &path).await?;
    let chat = ChatKey {
        application_id,
        chat_number,
    };
    let page = state
        .deps
        .search
        .search(chat, &query.q, query.limit, query.after)
        .await?;
    Ok(Json(SearchJson {
        items: page.hits.into_iter().map(MessageJson::from).collect(),
        next_after: page.next_after.map(|c| c.encode()),
    }))
}
