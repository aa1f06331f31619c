//! `/applications/{token}/chats/{number}/messages`.
use axum::{
    Extension, Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use chat_queue::QueueName;
use chat_store::{
    model::{MessageRow, newest_message},
    ratelimit::folded::Folded,
    repo,
};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::validate;
use crate::{
    AppState,
    error::ApiError,
    input::Input,
    params::{ChatPath, MessagePath, PageQuery, PageRequest, Segments},
    send::{self, Reserving},
    views::{ListJson, MessageJson},
    write::WriteContext,
};

const TAG: &str = "messages";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, replace, amend))
}

/// A message's fields; the body is required.
#[derive(Deserialize, ToSchema)]
#[schema(as = NewMessage)]
struct MessageInput {
    /// Kept byte for byte. At most `MAX_MESSAGE_BYTES` bytes (65,536 by
    /// default) in UTF-8; a longer one is a 413.
    #[schema(value_type = String, required = true, min_length = 1, pattern = r"[\s\S]*\S[\s\S]*")]
    body: Option<String>,
}

/// The fields to change; absent ones are kept.
#[derive(Deserialize, ToSchema)]
#[schema(as = MessageChanges)]
struct MessageChanges {
    /// As in `NewMessage`.
    #[schema(min_length = 1, pattern = r"[\s\S]*\S[\s\S]*")]
    body: Option<String>,
}

/// Resolves the token and chat of the path, 404 when either is unknown.
pub(super) async fn chat_of(state: &AppState, path: &Segments) -> Result<(i64, i64), ApiError> {
    let chat_number = path.number("number")?;
    let app_id = state.lookup.app_id(&state.deps, path.token()).await?;
    state
        .lookup
        .ensure_chat(&state.deps, app_id, chat_number)
        .await?;
    Ok((app_id, chat_number))
}

/// The message's newest state. With the read's `limits` (see
/// `rate_limit`), the intake checks them while it reads the pending entry,
/// and the database is read only after it admitted the read.
async fn find(
    state: &AppState,
    path: &Segments,
    limits: Option<&Folded>,
) -> Result<MessageRow, ApiError> {
    let number = path.number("message")?;
    let (app_id, chat_number) = chat_of(state, path).await?;
    let (db, intake) = (&state.deps.db, &state.deps.intake);
    let (persisted, pending) = match limits {
        Some(limits) => {
            let pending = intake
                .pending_message(app_id, chat_number, number, Some(limits))
                .await?;
            let persisted = repo::messages::find(db, app_id, chat_number, number).await?;
            (persisted, pending)
        }
        None => {
            let (persisted, pending) = tokio::join!(
                repo::messages::find(db, app_id, chat_number, number),
                intake.pending_message(app_id, chat_number, number, None)
            );
            (persisted?, pending?)
        }
    };
    if persisted.is_none() && pending.is_none() {
        // The row may have committed, and its pending entry gone, between
        // the two reads: the database answers for it now.
        let again = repo::messages::find(db, app_id, chat_number, number).await?;
        return again.ok_or(ApiError::NotFound("message"));
    }
    newest_message(persisted, pending).ok_or(ApiError::NotFound("message"))
}

/// Reserves the chat's next message number and queues the write. The
/// message is readable at once, and searchable once indexed.
#[utoipa::path(
    post,
    path = "/applications/{token}/chats/{number}/messages",
    tag = TAG,
    operation_id = "createMessage",
    params(ChatPath),
    request_body = MessageInput,
    responses(
        (status = 201, description = "Created", body = MessageJson,
            headers(("Location" = String, description = "The new message's URL"))),
    )
)]
async fn create(
    State(state): State<AppState>,
    write: WriteContext,
    path: Segments,
    Input(input): Input<MessageInput>,
) -> Result<impl IntoResponse, ApiError> {
    let body = validate::body(input.body, state.config.max_message_bytes)?;
    let (app_id, chat_number) = chat_of(&state, &path).await?;
    let row = send::traced(
        &state,
        &write,
        Reserving::MessageNumber,
        QueueName::Messages,
        async |meta| {
            let intake = &state.deps.intake;
            intake.create_message(app_id, chat_number, body, meta).await
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

/// Lists a chat's messages by number.
#[utoipa::path(
    get,
    path = "/applications/{token}/chats/{number}/messages",
    tag = TAG,
    operation_id = "listMessages",
    params(ChatPath, PageQuery),
    responses((status = 200, description = "A page of messages", body = ListJson<MessageJson>))
)]
async fn list(
    State(state): State<AppState>,
    path: Segments,
    page: PageRequest,
) -> Result<Json<ListJson<MessageJson>>, ApiError> {
    let (app_id, chat_number) = chat_of(&state, &path).await?;
    let page =
        repo::messages::list(&state.deps.db, app_id, chat_number, page.after, page.limit).await?;
    Ok(Json(page.into()))
}

/// Reads a message, including one whose write is still queued.
#[utoipa::path(
    get,
    path = "/applications/{token}/chats/{number}/messages/{message}",
    tag = TAG,
    operation_id = "getMessage",
    params(MessagePath),
    responses((status = 200, description = "The message", body = MessageJson))
)]
async fn show(
    State(state): State<AppState>,
    path: Segments,
    limits: Option<Extension<Folded>>,
) -> Result<Json<MessageJson>, ApiError> {
    let limits = limits.as_ref().map(|Extension(l)| l);
    Ok(Json(find(&state, &path, limits).await?.into()))
}

async fn update(
    state: &AppState,
    write: &WriteContext,
    current: &MessageRow,
    body: String,
) -> Result<Json<MessageJson>, ApiError> {
    let row = send::traced(
        state,
        write,
        Reserving::Version,
        QueueName::Messages,
        async |meta| state.deps.intake.update_message(current, body, meta).await,
    )
    .await?;
    Ok(Json(row.into()))
}

/// Replaces a message's body.
#[utoipa::path(
    put,
    path = "/applications/{token}/chats/{number}/messages/{message}",
    tag = TAG,
    operation_id = "replaceMessage",
    params(MessagePath),
    request_body = MessageInput,
    responses((status = 200, description = "The message", body = MessageJson))
)]
async fn replace(
    State(state): State<AppState>,
    write: WriteContext,
    path: Segments,
    Input(input): Input<MessageInput>,
) -> Result<Json<MessageJson>, ApiError> {
    let body = validate::body(input.body, state.config.max_message_bytes)?;
    let current = find(&state, &path, None).await?;
    update(&state, &write, &current, body).await
}

/// PATCH without a body leaves the message as it is.
#[utoipa::path(
    patch,
    path = "/applications/{token}/chats/{number}/messages/{message}",
    tag = TAG,
    operation_id = "updateMessage",
    description = "Changes the fields given; without a body, the message is returned unchanged.",
    params(MessagePath),
    request_body = Option<MessageChanges>,
    responses((status = 200, description = "The message", body = MessageJson))
)]
async fn amend(
    State(state): State<AppState>,
    write: WriteContext,
    path: Segments,
    Input(input): Input<MessageChanges>,
) -> Result<Json<MessageJson>, ApiError> {
    let current = find(&state, &path, None).await?;
    match input.body {
        None => Ok(Json(current.into())),
        body => {
            let body = validate::body(body, state.config.max_message_bytes)?;
            update(&state, &write, &current, body).await
        }
    }
}
