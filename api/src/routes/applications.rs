//! `/applications`: created and updated straight in the database, since
//! they are low-volume and their token must exist before any chat write.
use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use chat_store::repo;
use serde::Deserialize;

use super::validate;
use crate::{
    AppState,
    error::ApiError,
    input::{Input, MaybeInput},
    params::Segments,
    views::ApplicationJson,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/applications", post(create))
        .route("/applications/{token}", get(show).put(replace).patch(amend))
}

#[derive(Deserialize)]
struct ApplicationInput {
    name: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    Input(input): Input<ApplicationInput>,
) -> Result<impl IntoResponse, ApiError> {
    let name = validate::required_name(input.name)?;
    let app = repo::applications::create(&state.backends.writer, &name).await?;
    let location = format!("/api/v1/applications/{}", app.token);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(ApplicationJson::from(app)),
    ))
}

async fn find(
    state: &AppState,
    token: &str,
) -> Result<chat_store::model::ApplicationView, ApiError> {
    repo::applications::find_by_token(&state.backends.db, token)
        .await?
        .ok_or(ApiError::NotFound("application"))
}

async fn show(
    State(state): State<AppState>,
    path: Segments,
) -> Result<Json<ApplicationJson>, ApiError> {
    Ok(Json(find(&state, path.token()).await?.into()))
}

/// A PUT with no body at all leaves the application as it is: clients of
/// the system this replaces send one, and it answered 200 unchanged. A
/// body without a name is still refused.
async fn replace(
    State(state): State<AppState>,
    path: Segments,
    MaybeInput(input): MaybeInput<ApplicationInput>,
) -> Result<Json<ApplicationJson>, ApiError> {
    let app = find(&state, path.token()).await?;
    let Some(input) = input else {
        return Ok(Json(app.into()));
    };
    let name = validate::required_name(input.name)?;
    Ok(Json(
        repo::applications::rename(&state.backends.writer, app.id, &name)
            .await?
            .into(),
    ))
}

async fn amend(
    State(state): State<AppState>,
    path: Segments,
    Input(input): Input<ApplicationInput>,
) -> Result<Json<ApplicationJson>, ApiError> {
    let app = find(&state, path.token()).await?;
    match validate::optional_name(input.name)? {
        Some(name) => Ok(Json(
            repo::applications::rename(&state.backends.writer, app.id, &name)
                .await?
                .into(),
        )),
        None => Ok(Json(app.into())),
    }
}
