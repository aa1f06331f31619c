//! `/applications/{token}/chats`: writes go through the intake (number,
//! version, queue); reads merge the database with pending writes.
use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use chat_store::{model::ChatView, queue::QueueName, repo};
use serde::Deserialize;

use super::validate;
use crate::{
    AppState,
    error::ApiError,
    input::Input,
    params::{PageRequest, Segments},
    send::{self, Reserving},
    views::{ChatJson, ListJson},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/applications/{token}/chats", get(list).post(create))
        .route(
            "/applications/{token}/chats/{number}",
            get(show).put(replace).patch(amend),
        )
}

#[derive(Deserialize)]
struct ChatInput {
    name: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    path: Segments,
    Input(input): Input<ChatInput>,
) -> Result<impl IntoResponse, ApiError> {
    let name = validate::optional_name(input.name)?;
    let app_id = state.lookup.app_id(&state.backends, path.token()).await?;
    let row = send::traced(
        &state,
        Reserving::ChatNumber,
        QueueName::Chats,
        async |trace| state.backends.intake.create_chat(app_id, name, trace).await,
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

async fn list(
    State(state): State<AppState>,
    path: Segments,
    page: PageRequest,
) -> Result<Json<ListJson<ChatJson>>, ApiError> {
    let app_id = state.lookup.app_id(&state.backends, path.token()).await?;
    let page = repo::chats::list(&state.backends.db, app_id, page.after, page.limit).await?;
    Ok(Json(page.into()))
}

/// The chat the path names, persisted or pending.
async fn find(state: &AppState, path: &Segments) -> Result<ChatView, ApiError> {
    let number = path.number("number")?;
    let app_id = state.lookup.app_id(&state.backends, path.token()).await?;
    state.lookup.chat(&state.backends, app_id, number).await
}

async fn show(State(state): State<AppState>, path: Segments) -> Result<Json<ChatJson>, ApiError> {
    Ok(Json(find(&state, &path).await?.into()))
}

async fn update(
    state: &AppState,
    path: &Segments,
    name: Option<String>,
) -> Result<ChatJson, ApiError> {
    let current = find(state, path).await?;
    let row = send::traced(state, Reserving::Version, QueueName::Chats, async |trace| {
        state
            .backends
            .intake
            .update_chat(&current.row, name, trace)
            .await
    })
    .await?;
    Ok(ChatView {
        row,
        messages_count: current.messages_count,
    }
    .into())
}

/// PUT replaces the whole chat: an absent name clears it.
async fn replace(
    State(state): State<AppState>,
    path: Segments,
    Input(input): Input<ChatInput>,
) -> Result<Json<ChatJson>, ApiError> {
    let name = validate::optional_name(input.name)?;
    Ok(Json(update(&state, &path, name).await?))
}

/// PATCH changes only the fields given.
async fn amend(
    State(state): State<AppState>,
    path: Segments,
    Input(input): Input<ChatInput>,
) -> Result<Json<ChatJson>, ApiError> {
    match validate::optional_name(input.name)? {
        Some(name) => Ok(Json(update(&state, &path, Some(name)).await?)),
        None => Ok(Json(find(&state, &path).await?.into())),
    }
}
