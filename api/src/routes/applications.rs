//! `/applications`: created and updated straight in the database, since
//! they are low-volume and their token must exist before any chat write.
use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use chat_store::repo;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::validate;
use crate::{
    AppState,
    error::ApiError,
    input::{Input, MaybeInput},
    params::{ApplicationPath, Segments},
    views::ApplicationJson,
    write::WriteContext,
};

const TAG: &str = "applications";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(show, replace, amend))
}

/// An application's fields; the name is required.
#[derive(Deserialize, ToSchema)]
#[schema(as = NewApplication)]
struct ApplicationInput {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 255, pattern = r"[\s\S]*\S[\s\S]*")]
    name: Option<String>,
}

/// The fields to change; absent ones are kept.
#[derive(Deserialize, ToSchema)]
#[schema(as = ApplicationChanges)]
struct ApplicationChanges {
    #[schema(min_length = 1, max_length = 255, pattern = r"[\s\S]*\S[\s\S]*")]
    name: Option<String>,
}

/// Creates an application and generates its token.
#[utoipa::path(
    post,
    path = "/applications",
    tag = TAG,
    operation_id = "createApplication",
    request_body = ApplicationInput,
    responses(
        (status = 201, description = "Created", body = ApplicationJson,
            headers(("Location" = String, description = "The new application's URL"))),
    )
)]
async fn create(
    State(state): State<AppState>,
    write: WriteContext,
    Input(input): Input<ApplicationInput>,
) -> Result<impl IntoResponse, ApiError> {
    let name = validate::required_name(input.name)?;
    // Under an Idempotency-Key, every run of the request uses the token the
    // first run made up, so a run after a lost answer finds the
    // application instead of creating a second one.
    let token = match write.idempotency() {
        Some(link) => {
            let proposal = repo::applications::new_token();
            state.deps.idempotency.plan(link, &proposal).await?
        }
        None => repo::applications::new_token(),
    };
    write.reaching();
    let app = repo::applications::create_as(&state.deps.writer, &name, &token).await?;
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
    repo::applications::find_by_token(&state.deps.db, token)
        .await?
        .ok_or(ApiError::NotFound("application"))
}

/// Reads an application.
#[utoipa::path(
    get,
    path = "/applications/{token}",
    tag = TAG,
    operation_id = "getApplication",
    params(ApplicationPath),
    responses((status = 200, description = "The application", body = ApplicationJson))
)]
async fn show(
    State(state): State<AppState>,
    path: Segments,
) -> Result<Json<ApplicationJson>, ApiError> {
    Ok(Json(find(&state, path.token()).await?.into()))
}

/// A PUT with no body at all leaves the application as it is: clients of
/// the system this replaces send one, and it answered 200 unchanged. A
/// body without a name is still refused.
#[utoipa::path(
    put,
    path = "/applications/{token}",
    tag = TAG,
    operation_id = "replaceApplication",
    description = "Renames an application. With no body at all, the application is returned unchanged.",
    params(ApplicationPath),
    request_body = Option<ApplicationInput>,
    responses((status = 200, description = "The application", body = ApplicationJson))
)]
async fn replace(
    State(state): State<AppState>,
    write: WriteContext,
    path: Segments,
    MaybeInput(input): MaybeInput<ApplicationInput>,
) -> Result<Json<ApplicationJson>, ApiError> {
    let app = find(&state, path.token()).await?;
    let Some(input) = input else {
        return Ok(Json(app.into()));
    };
    let name = validate::required_name(input.name)?;
    write.reaching();
    Ok(Json(
        repo::applications::rename(&state.deps.writer, app.id, &name)
            .await?
            .into(),
    ))
}

/// Changes the fields given.
#[utoipa::path(
    patch,
    path = "/applications/{token}",
    tag = TAG,
    operation_id = "updateApplication",
    params(ApplicationPath),
    request_body = Option<ApplicationChanges>,
    responses((status = 200, description = "The application", body = ApplicationJson))
)]
async fn amend(
    State(state): State<AppState>,
    write: WriteContext,
    path: Segments,
    Input(input): Input<ApplicationChanges>,
) -> Result<Json<ApplicationJson>, ApiError> {
    let app = find(&state, path.token()).await?;
    match validate::optional_name(input.name)? {
        Some(name) => Ok(Json({
            write.reaching();
            repo::applications::rename(&state.deps.writer, app.id, &name)
                .await?
                .into()
        })),
        None => Ok(Json(app.into())),
    }
}
