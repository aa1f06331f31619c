//! The login form, the `?token=` link, and logging out. A login carries
//! `next`, the page the operator asked for, and lands there.
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

use chat_ops::sessions;

use crate::{
    Dashboard,
    attempts::client_address,
    auth::{Operator, back_to, clear_cookie, over_https, same, session, set_cookie},
    error::{DashError, retry_after, too_many_attempts},
    pages::layout,
};

#[derive(Deserialize)]
pub(crate) struct Credentials {
    token: Option<String>,
    name: Option<String>,
    next: Option<String>,
}

fn page(status: StatusCode, error: Option<&str>, next: Option<&str>) -> Response {
    let body = html! {
        h1 { "Log in" }
        @if let Some(error) = error { p.error { (error) } }
        form method="post" action="/admin/login" {
            @if let Some(next) = next { input type="hidden" name="next" value=(back_to(Some(next))); }
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
            credentials.next.as_deref(),
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
            credentials.next.as_deref(),
        );
    }
    let name = credentials
        .name
        .map(|n| n.trim().chars().take(64).collect::<String>())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "admin".to_owned());
    let cookie = set_cookie(&session(&d.config.token, &name), request.https);
    let next = back_to(credentials.next.as_deref());
    ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
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
    page(StatusCode::OK, None, q.next.as_deref())
}

pub(crate) async fn submit(
    State(d): State<Dashboard>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(c): Form<Credentials>,
) -> Response {
    sign_in(&d, &Origin::of(&d, &headers, peer), c)
}

/// Revokes the session everywhere, then clears the cookie: clearing
/// alone would leave a copy of it valid until it expires.
pub(crate) async fn logout(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    headers: HeaderMap,
) -> Result<Response, DashError> {
    if let Some(session) = &op.session {
        sessions::revoke(&d.deps.db, &session.signature, session.expires_at).await?;
    }
    let https = over_https(&headers, d.config.trust_forwarded_proto);
    Ok((
        [(header::SET_COOKIE, clear_cookie(https))],
        Redirect::to("/admin/login"),
    )
        .into_response())
}
