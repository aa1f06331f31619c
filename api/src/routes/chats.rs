//! `/applications/{token}/chats`: writes go through the intake (number,
//! version, queue); reads merge the database with pending writes.
use axum::{
    Extension, Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use chat_queue::QueueName;
use chat_store::{model::ChatView, ratelimit::folded::Folded, repo};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::validate;
use crate::{
    AppState,
    error::ApiError,
    input::Input,
    params::{ApplicationPath, ChatPath, PageQuery, PageRequest, Segments},
    send::{self, Reserving},
    views::{ChatJson, ListJson},
    write::WriteContext,
};

const TAG: &str = "chats";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, replace, amend))
}

/// A chat's fields; all optional.
#[derive(Deserialize, ToSchema)]
#[schema(as = ChatFields)]
struct ChatInput {
    #[schema(min_length = 1, max_length = 255, pattern = r"[\s\S]*\S[\s\S]*")]
    name: Option<String>,
}

/// Reserves the application's next chat number and queues the write. The
/// chat is readable at once; `messages_count` starts at 0.
#[utoipa::path(
    post,
    path = "/applications/{token}/chats",
    tag = TAG,
    operation_id = "createChat",
    params(ApplicationPath),
    request_body = Option<ChatInput>,
    responses(
        (status = 201, description = "Created", body = ChatJson,
            headers(("Location" = String, description = "The new chat's URL"))),
    )
)]
async fn create(
    State(state): State<AppState>,
    write: WriteContext,
    path: Segments,
    Input(input): Input<ChatInput>,
) -> Result<impl IntoResponse, ApiError> {
    let name = validate::optional_name(input.name)?;
    let app_id = state.lookup.app_id(&state.deps, path.token()).await?;
    let row = send::traced(
        &state,
        &write,
        Reserving::ChatNumber,
        QueueName::Chats,
        async |meta| state.deps.intake.create_chat(app_id, name, meta).await,
    )
    .await?;
    state.lookup.remember_chat(app_id, row.number);
    let location = format!("/api/v1/applications/{}/chats/{}", path.token(), row.number);
    let view = ChatView {
        row,
        messages_count: 0,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(ChatJson::from(view)),
    ))
}

/// Lists an application's chats by number.
#[utoipa::path(
    get,
    path = "/applications/{token}/chats",
    tag = TAG,
    operation_id = "listChats",
    params(ApplicationPath, PageQuery),
    responses((status = 200, description = "A page of chats", body = ListJson<ChatJson>))
)]
async fn list(
    State(state): State<AppState>,
    path: Segments,
    page: PageRequest,
) -> Result<Json<ListJson<ChatJson>>, ApiError> {
    let app_id = state.lookup.app_id(&state.deps, path.token()).await?;
    let page = repo::chats::list(&state.deps.db, app_id, page.after, page.limit).await?;
    Ok(Json(page.into()))
}

/// The chat the path names, persisted or pending.
/// The chat's newest state; `limits` as in `Lookup::chat`.
async fn find(
    state: &AppState,
    path: &Segments,
    limits: Option<&Folded>,
) -> Result<ChatView, ApiError> {
    let number = path.number("number")?;
    let app_id = state.lookup.app_id(&state.deps, path.token()).await?;
    state.lookup.chat(&state.deps, app_id, number, limits).await
}

/// Reads a chat, including one whose write is still queued.
#[utoipa::path(
    get,
    path = "/applications/{token}/chats/{number}",
    tag = TAG,
    operation_id = "getChat",
    params(ChatPath),
    responses((status = 200, description = "The chat", body = ChatJson))
)]
async fn show(
    State(state): State<AppState>,
    path: Segments,
    limits: Option<Extension<Folded>>,
) -> Result<Json<ChatJson>, ApiError> {
    let limits = limits.as_ref().map(|Extension(l)| l);
    Ok(Json(find(&state, &path, limits).await?.into()))
}

async fn update(
    state: &AppState,
    write: &WriteContext,
    path: &Segments,
    name: Option<String>,
) -> Result<ChatJson, ApiError> {
    let current = find(state, path, None).await?;
    let row = send::traced(
        state,
        write,
        Reserving::Version,
        QueueName::Chats,
        async |meta| {
            state
                .deps
                .intake
                .update_chat(&current.row, name, meta)
                .await
        },
    )
    .await?;
    Ok(ChatView {
        row,
        messages_count: current.messages_count,
    }
    .into())
}

/// PUT replaces the whole chat: an absent name clears it.
#[utoipa::path(
    put,
    path = "/applications/{token}/chats/{number}",
    tag = TAG,
    operation_id = "replaceChat",
    description = "Replaces the chat's fields: an absent name clears it.",
    params(ChatPath),
    request_body = Option<ChatInput>,
    responses((status = 200, description = "The chat", body = ChatJson))
)]
async fn replace(
    State(state): State<AppState>,
    write: WriteContext,
    path: Segments,
    Input(input): Input<ChatInput>,
) -> Result<Json<ChatJson>, ApiError> {
    let name = validate::optional_name(input.name)?;
    Ok(Json(update(&state, &write, &path, name).await?))
}

/// PATCH changes only the fields given.
#[utoipa::path(
    patch,
    path = "/applications/{token}/chats/{number}",
    tag = TAG,
    operation_id = "updateChat",
    description = "Changes the fields given; absent ones are kept.",
    params(ChatPath),
    request_body = Option<ChatInput>,
    responses((status = 200, description = "The chat", body = ChatJson))
)]
async fn amend(
    State(state): State<AppState>,
    write: WriteContext,
    path: Segments,
    Input(input): Input<ChatInput>,
) -> Result<Json<ChatJson>, ApiError> {
    match validate::optional_name(input.name)? {
        Some(name) => Ok(Json(update(&state, &write, &path, Some(name)).await?)),
        None => Ok(Json(find(&state, &path, None).await?.into())),
    }
}
