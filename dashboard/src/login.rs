//! The login form, the `?token=` link, and logging out.
use axum::{
    Form,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use maud::html;
use serde::Deserialize;

use crate::{
    Dashboard,
    auth::{clear_cookie, same, session, set_cookie},
    pages::layout,
};

#[derive(Deserialize)]
pub(crate) struct Credentials {
    token: Option<String>,
    name: Option<String>,
}

fn page(status: StatusCode, error: Option<&str>) -> Response {
    let body = html! {
        h1 { "Log in" }
        @if let Some(error) = error { p.error { (error) } }
        form method="post" action="/admin/login" {
            p { label { "Admin token " input type="password" name="token" autocomplete="current-password" required; } }
            p { label { "Your name (for the audit trail) " input type="text" name="name" maxlength="64" required; } }
            p { button type="submit" { "Log in" } }
        }
    };
    (status, layout("Log in", None, false, body)).into_response()
}

/// Signs in when the token is right, and sends the operator on.
fn sign_in(d: &Dashboard, credentials: Credentials) -> Response {
    if !credentials
        .token
        .as_deref()
        .is_some_and(|t| same(t, &d.config.token))
    {
        return page(
            StatusCode::UNAUTHORIZED,
            Some("That token is not the admin token."),
        );
    }
    let name = credentials
        .name
        .map(|n| n.trim().chars().take(64).collect::<String>())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "admin".to_owned());
    let cookie = set_cookie(&session(&d.config.token, &name));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/admin")).into_response()
}

/// The form; with `?token=`, the link printed at start, signs in at once.
pub(crate) async fn form(State(d): State<Dashboard>, Query(q): Query<Credentials>) -> Response {
    if q.token.is_some() {
        return sign_in(&d, q);
    }
    page(StatusCode::OK, None)
}

pub(crate) async fn submit(State(d): State<Dashboard>, Form(c): Form<Credentials>) -> Response {
    sign_in(&d, c)
}

pub(crate) async fn logout() -> Response {
    (
        [(header::SET_COOKIE, clear_cookie())],
        Redirect::to("/admin/login"),
    )
        .into_response()
}
