//! Who may use the dashboard: one secret, `ADMIN_TOKEN`.
//!
//! An operator enters the token and a name once, on the login form (or
//! opens the `?token=` link printed at start, as Jupyter does). The
//! server answers with a session cookie: the name and issue time, signed
//! with an HMAC keyed by the token, so every API process that shares the
//! token accepts it without shared session state, and changing the token
//! logs everyone out. The cookie is `HttpOnly` and `SameSite=Strict`,
//! scoped to `/admin`, and `Secure` when the request came over HTTPS
//! (as a trusted proxy's `X-Forwarded-Proto` says): a browser drops a
//! `Secure` cookie set over plain HTTP, and the login would loop.
//!
//! Logging out revokes the session: its signature is written to the
//! database until the cookie would have expired, and every request with a
//! cookie is checked against that list, so a copied cookie dies with the
//! logout on every process. While the database does not answer, the check
//! is skipped (and logged), so the dashboard stays open during an outage.
//!
//! Every action form carries a CSRF token derived from the session (an
//! HMAC of its signature), which the action recomputes. Scripts and tools
//! may instead send `Authorization: Bearer <token>`; such requests carry
//! no cookie, so they need no CSRF token.
use std::{net::SocketAddr, time::Instant};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, Method, header},
    middleware::Next,
    response::Response,
};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use chat_ops::sessions;

use crate::{Dashboard, attempts, error::DashError};

pub(crate) const COOKIE: &str = "chat_admin";
/// A session lasts a working day, then asks for the token again.
const SESSION_SECS: i64 = 12 * 3600;

/// The signed-in operator, put in the request's extensions.
#[derive(Clone, Debug)]
pub(crate) struct Operator {
    pub name: String,
    /// Present for a cookie session: what action forms must echo.
    pub csrf: Option<String>,
    /// Present for a cookie session: what logging out revokes.
    pub session: Option<Session>,
}

/// A cookie session as the revocation list names it.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub signature: String,
    /// When the cookie expires by itself, in ms since the epoch.
    pub expires_at: i64,
}

fn mac(key: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    for part in parts {
        mac.update(part);
        mac.update(b"\x1f");
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time equality, so a guess learns nothing from timing.
pub(crate) fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A session cookie's value for `name`, issued now.
pub(crate) fn session(token: &str, name: &str) -> String {
    let issued = chat_links::now_millis() / 1000;
    let name = hex::encode(name.as_bytes());
    let signature = mac(
        token,
        &[b"session", name.as_bytes(), issued.to_string().as_bytes()],
    );
    format!("{name}.{issued}.{signature}")
}

pub(crate) fn set_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={value}; Path=/admin; Max-Age={SESSION_SECS}; HttpOnly{secure}; SameSite=Strict"
    )
}

pub(crate) fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/admin; Max-Age=0; HttpOnly{secure}; SameSite=Strict")
}

/// Whether the browser reached us over HTTPS. The server itself speaks
/// plain HTTP, so only a proxy that ends TLS, and is trusted to say so,
/// can tell.
pub(crate) fn over_https(headers: &HeaderMap, trust_forwarded_proto: bool) -> bool {
    trust_forwarded_proto
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The operator a session cookie names, if its signature holds and it
/// has not expired.
fn verify(token: &str, value: &str) -> Option<Operator> {
    let mut parts = value.splitn(3, '.');
    let (name, issued, signature) = (parts.next()?, parts.next()?, parts.next()?);
    let expected = mac(token, &[b"session", name.as_bytes(), issued.as_bytes()]);
    if !same(&expected, signature) {
        return None;
    }
    let issued: i64 = issued.parse().ok()?;
    let age = chat_links::now_millis() / 1000 - issued;
    if !(0..SESSION_SECS).contains(&age) {
        return None;
    }
    let name = String::from_utf8(hex::decode(name).ok()?).ok()?;
    Some(Operator {
        name,
        csrf: Some(mac(token, &[b"csrf", signature.as_bytes()])),
        session: Some(Session {
            signature: signature.to_owned(),
            expires_at: (issued + SESSION_SECS) * 1000,
        }),
    })
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The operator behind a request: a valid session cookie, or the token
/// as a bearer credential.
pub(crate) fn operator(dashboard: &Dashboard, headers: &HeaderMap) -> Option<Operator> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(presented) = bearer {
        return same(presented.trim(), &dashboard.config.token).then(|| Operator {
            name: "api".into(),
            csrf: None,
            session: None,
        });
    }
    verify(&dashboard.config.token, cookie(headers, COOKIE)?)
}

/// Refuses every request without a valid session or bearer token: pages
/// redirect to the login form, JSON routes answer 401. A wrong bearer
/// token counts against the client's address, which is refused once it
/// has used up its attempts.
pub(crate) async fn require(
    State(dashboard): State<Dashboard>,
    mut request: Request,
    next: Next,
) -> Result<Response, DashError> {
    let address = attempts::client_address(
        request.headers(),
        request.extensions().get::<ConnectInfo<SocketAddr>>(),
        dashboard.config.trust_forwarded_for,
    );
    let bearer = request.headers().contains_key(header::AUTHORIZATION);
    let now = Instant::now();
    if bearer && let Some(wait) = dashboard.attempts.refused(address, now) {
        return Err(DashError::TooManyAttempts(wait));
    }
    let mut op = operator(&dashboard, request.headers());
    if let Some(session) = op.as_ref().and_then(|op| op.session.as_ref()) {
        match sessions::is_revoked(&dashboard.deps.db, &session.signature).await {
            Ok(true) => op = None,
            Ok(false) => {}
            // The dashboard is most needed while a backend is down: a
            // valid, unexpired cookie still opens it then, and only a
            // logged-out one slips through until the database is back.
            Err(e) => tracing::warn!(error = %e, "could not check the session against logouts"),
        }
    }
    match op {
        Some(op) => {
            request.extensions_mut().insert(op);
            Ok(next.run(request).await)
        }
        None => {
            if bearer {
                dashboard.attempts.failed(address, "bearer", now);
            }
            if request.uri().path().starts_with("/admin/api/") {
                Err(DashError::Unauthorized)
            } else {
                let back = (request.method() == Method::GET)
                    .then(|| {
                        request
                            .uri()
                            .path_and_query()
                            .map(|p| p.as_str().to_owned())
                    })
                    .flatten();
                Err(DashError::LoginFirst(back))
            }
        }
    }
}

/// `next` when it is a dashboard path on this origin, the only place a
/// login may send the browser on to: not `//host`, not `/\host` (which
/// browsers read as `//host`), not the login itself.
pub(crate) fn back_to(next: Option<&str>) -> &str {
    let Some(next) = next else { return "/admin" };
    let dashboard = next == "/admin" || next.starts_with("/admin/") || next.starts_with("/admin?");
    let plain = !next.contains('\\') && !next.chars().any(char::is_control);
    if dashboard && plain && !next.starts_with("/admin/login") && !next.starts_with("/admin/logout")
    {
        next
    } else {
        "/admin"
    }
}

/// Checks an action form's CSRF token against the session's. A bearer
/// request has no session and sends none.
pub(crate) fn check_csrf(op: &Operator, presented: Option<&str>) -> Result<(), DashError> {
    match (&op.csrf, presented) {
        (None, _) => Ok(()),
        (Some(expected), Some(presented)) if same(expected, presented) => Ok(()),
        _ => Err(DashError::Forbidden(
            "the form's CSRF token is missing or stale; reload the page".into(),
        )),
    }
}

/// A random token for a server started without `ADMIN_TOKEN`.
pub fn generate_token() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_verifies_only_with_its_token_and_unaltered() {
        let value = session("secret", "Ada <ops>");
        let op = verify("secret", &value).expect("valid");
        assert_eq!(op.name, "Ada <ops>");
        assert!(op.csrf.is_some());
        assert!(verify("other", &value).is_none(), "another token");
        let forged = value.replacen(&hex::encode("Ada <ops>"), &hex::encode("root"), 1);
        assert!(verify("secret", &forged).is_none(), "another name");
        assert!(verify("secret", "garbage").is_none());
    }

    #[test]
    fn a_login_sends_the_browser_back_only_within_the_dashboard() {
        assert_eq!(back_to(None), "/admin");
        for kept in [
            "/admin",
            "/admin/queues/messages/jobs/dead?error=x",
            "/admin?range=day",
        ] {
            assert_eq!(back_to(Some(kept)), kept);
        }
        for refused in [
            "//evil.example/admin",
            "https://evil.example/admin",
            "/\\evil.example",
            "/admin\\..\\x",
            "/administrator",
            "/admin/login?next=/x",
            "/admin/logout",
            "/api/v1/applications",
            "/admin/\n",
        ] {
            assert_eq!(back_to(Some(refused)), "/admin", "{refused:?}");
        }
    }

    #[test]
    fn the_cookie_is_secure_only_over_https_as_a_trusted_proxy_says() {
        let mut headers = HeaderMap::new();
        assert!(!over_https(&headers, true), "plain HTTP");
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(over_https(&headers, true));
        assert!(!over_https(&headers, false), "an untrusted header");
        assert!(set_cookie("v", true).contains("; Secure"));
        assert!(!set_cookie("v", false).contains("Secure"));
        assert!(!clear_cookie(false).contains("Secure"));
    }
}
