//! The login form, the `?token=` link, and logging out.
use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use axum::{
    Extension, Form,
    extract::{ConnectInfo, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use maud::html;
use serde::Deserialize;

use crate::{
    Dashboard,
    attempts::client_address,
    auth::{clear_cookie, over_https, same, session, set_cookie},
    error::{retry_after, too_many_attempts},
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

/// Signs in when the token is right, and sends the operator on; a wrong
/// token counts against the client's address.
fn sign_in(d: &Dashboard, request: &Origin, credentials: Credentials) -> Response {
    let now = Instant::now();
    if let Some(wait) = d.attempts.refused(request.address, now) {
        let mut refused = page(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&too_many_attempts(wait)),
        );
        refused
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after(wait));
        return refused;
    }
    if !credentials
        .token
        .as_deref()
        .is_some_and(|t| same(t, &d.config.token))
    {
        d.attempts.failed(request.address, "login", now);
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
    let cookie = set_cookie(&session(&d.config.token, &name), request.https);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/admin")).into_response()
}

/// Where a login request came from, as the limit and the cookie see it.
pub(crate) struct Origin {
    address: IpAddr,
    https: bool,
}

impl Origin {
    fn of(
        d: &Dashboard,
        headers: &HeaderMap,
        peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ) -> Self {
        Origin {
            address: client_address(
                headers,
                peer.as_ref().map(|Extension(c)| c),
                d.config.trust_forwarded_for,
            ),
            https: over_https(headers, d.config.trust_forwarded_proto),
        }
    }
}

/// The form; with `?token=`, the link printed at start, signs in at once.
pub(crate) async fn form(
    State(d): State<Dashboard>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(q): Query<Credentials>,
) -> Response {
    if q.token.is_some() {
        return sign_in(&d, &Origin::of(&d, &headers, peer), q);
    }
    page(StatusCode::OK, None)
}

pub(crate) async fn submit(
    State(d): State<Dashboard>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(c): Form<Credentials>,
) -> Response {
    sign_in(&d, &Origin::of(&d, &headers, peer), c)
}

pub(crate) async fn logout(State(d): State<Dashboard>, headers: HeaderMap) -> Response {
    let https = over_https(&headers, d.config.trust_forwarded_proto);
    (
        [(header::SET_COOKIE, clear_cookie(https))],
        Redirect::to("/admin/login"),
    )
        .into_response()
}
