//! `/applications/{token}/chats/{number}/messages`.
use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use chat_store::{
    model::{MessageRow, newest_message},
    queue::QueueName,
    repo,
};
use serde::Deserialize;

use super::validate;
use crate::{
    AppState,
    error::ApiError,
    input::Input,
    params::{PageRequest, Segments},
    send::{self, Reserving},
    views::{ListJson, MessageJson},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/applications/{token}/chats/{number}/messages",
            get(list).post(create),
        )
        .route(
            "/applications/{token}/chats/{number}/messages/{message}",
            get(show).put(replace).patch(amend),
        )
}

#[derive(Deserialize)]
struct MessageInput {
    body: Option<String>,
}

/// Resolves the token and chat of the path, 404 when either is unknown.
pub(super) async fn chat_of(state: &AppState, path: &Segments) -> Result<(i64, i64), ApiError> {
    let chat_number = path.number("number")?;
    let app_id = state.lookup.app_id(&state.backends, path.token()).await?;
    state
        .lookup
        .ensure_chat(&state.backends, app_id, chat_number)
        .await?;
    Ok((app_id, chat_number))
}

async fn find(state: &AppState, path: &Segments) -> Result<MessageRow, ApiError> {
    let number = path.number("message")?;
    let (app_id, chat_number) = chat_of(state, path).await?;
    let (persisted, pending) = tokio::join!(
        repo::messages::find(&state.backends.db, app_id, chat_number, number),
        state
            .backends
            .intake
            .pending_message(app_id, chat_number, number)
    );
    newest_message(persisted?, pending?).ok_or(ApiError::NotFound("message"))
}

async fn create(
    State(state): State<AppState>,
    path: Segments,
    Input(input): Input<MessageInput>,
) -> Result<impl IntoResponse, ApiError> {
    let body = validate::body(input.body, state.config.max_message_bytes)?;
    let (app_id, chat_number) = chat_of(&state, &path).await?;
    let row = send::traced(
        &state,
        Reserving::MessageNumber,
        QueueName::Messages,
        async |trace| {
            let intake = &state.backends.intake;
            intake
                .create_message(app_id, chat_number, body, trace)
                .await
        },
    )
    .await?;
    let location = format!(
        "/api/v1/applications/{}/chats/{chat_number}/messages/{}",
        path.token(),
        row.number
    );
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(MessageJson::from(row)),
    ))
}

async fn list(
    State(state): State<AppState>,
    path: Segments,
    page: PageRequest,
) -> Result<Json<ListJson<MessageJson>>, ApiError> {
    let (app_id, chat_number) = chat_of(&state, &path).await?;
    let page = repo::messages::list(
        &state.backends.db,
        app_id,
        chat_number,
        page.after,
        page.limit,
    )
    .await?;
    Ok(Json(page.into()))
}

async fn show(
    State(state): State<AppState>,
    path: Segments,
) -> Result<Json<MessageJson>, ApiError> {
    Ok(Json(find(&state, &path).await?.into()))
}

async fn update(
    state: &AppState,
    current: &MessageRow,
    body: String,
) -> Result<Json<MessageJson>, ApiError> {
    let row = send::traced(
        state,
        Reserving::Version,
        QueueName::Messages,
        async |trace| {
            state
                .backends
                .intake
                .update_message(current, body, trace)
                .await
        },
    )
    .await?;
    Ok(Json(row.into()))
}

async fn replace(
    State(state): State<AppState>,
    path: Segments,
    Input(input): Input<MessageInput>,
) -> Result<Json<MessageJson>, ApiError> {
    let body = validate::body(input.body, state.config.max_message_bytes)?;
    let current = find(&state, &path).await?;
    update(&state, &current, body).await
}

/// PATCH without a body leaves the message as it is.
async fn amend(
    State(state): State<AppState>,
    path: Segments,
    Input(input): Input<MessageInput>,
) -> Result<Json<MessageJson>, ApiError> {
    let current = find(&state, &path).await?;
    match input.body {
        None => Ok(Json(current.into())),
        body => {
            let body = validate::body(body, state.config.max_message_bytes)?;
            update(&state, &current, body).await
        }
    }
}
