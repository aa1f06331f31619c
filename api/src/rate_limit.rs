//! Rate limits on `/api/v1`: per application token and per client address,
//! with separate limits for writes and reads. Health, metrics and the
//! dashboard are not limited.
//!
//! Every limited response carries `RateLimit-Limit`, `RateLimit-Remaining`
//! and `RateLimit-Reset` (seconds) for its most restrictive limit; a refused
//! one is a 429 problem with `Retry-After`. The limits live in the store's
//! rate limiter: Redis on the distributed profile, so every API process
//! shares them, memory on the embedded one. If the limiter cannot answer
//! (Redis down) the request is admitted: a limit is no reason to refuse
//! service, and the write itself then fails or succeeds on its own.
//!
//! A chat or message write on Redis spends no round trip on its limits:
//! they ride in the write to the intake's accept script, which checks them
//! in the call that accepts the write (`ratelimit::folded`). A read of one
//! chat or message does the same in the call that reads its pending entry,
//! before it reads the database. Which routes do so is
//! `routes::INTAKE_WRITES` and `routes::INTAKE_READS`. A request that
//! ends without reaching the intake (refused by validation, unknown chat,
//! nothing to change) is counted after the fact, and answered 429 if it was
//! over the limit: it changed nothing, so it can still be refused.
use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chat_store::{
    ratelimit::{Limit, Verdict, folded::Folded},
    repo::applications::token_digest,
};

use crate::{ApiError, AppState, routes, under_api};

/// The limits, each in requests per `window`; 0 turns one off.
#[derive(Clone, Debug)]
pub struct RateLimits {
    pub enabled: bool,
    pub window: Duration,
    pub token_writes: u32,
    pub token_reads: u32,
    pub ip_writes: u32,
    pub ip_reads: u32,
    /// Take the client address from the first `X-Forwarded-For` entry:
    /// only behind a proxy that sets it.
    pub trust_forwarded_for: bool,
}

impl Default for RateLimits {
    /// Generous: 1,000 writes and 5,000 reads a second, sustained, per
    /// token and per address, with a minute's worth allowed in a burst.
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(60),
            token_writes: 60_000,
            token_reads: 300_000,
            ip_writes: 60_000,
            ip_reads: 300_000,
            trust_forwarded_for: false,
        }
    }
}

/// The application token in an `/api/v1/applications/{token}/…` path,
/// and what follows it.
fn token_in(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/v1/applications/")?;
    let (token, after) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    (!token.is_empty()).then_some((token, after))
}

/// The token as the routes see it: axum decodes the path, so `%41bc`
/// and `Abc` name one application and must share one bucket.
fn decoded(token: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::percent_decode_str(token).decode_utf8_lossy()
}

fn client_address(req: &Request, trust_forwarded_for: bool) -> String {
    if trust_forwarded_for
        && let Some(first) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    {
        return first.to_owned();
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

fn limits_for(req: &Request, config: &RateLimits) -> Vec<Limit> {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let (kind, by_token, by_ip) = if write {
        ("w", config.token_writes, config.ip_writes)
    } else {
        ("r", config.token_reads, config.ip_reads)
    };
    let mut limits = Vec::with_capacity(2);
    if by_token > 0
        && let Some((token, _)) = token_in(req.uri().path())
    {
        limits.push(Limit {
            key: format!("{kind}:t:{}", token_digest(&decoded(token))),
            limit: by_token,
            period: config.window,
        });
    }
    if by_ip > 0 {
        limits.push(Limit {
            key: format!(
                "{kind}:ip:{}",
                client_address(req, config.trust_forwarded_for)
            ),
            limit: by_ip,
            period: config.window,
        });
    }
    limits
}

/// Whole seconds, rounded up: a client that waits this long is admitted.
fn secs_up(d: Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

fn describe(headers: &mut HeaderMap, v: &Verdict) {
    let mut set = |name: &'static str, value: u64| {
        headers.insert(name, HeaderValue::from(value));
    };
    set("ratelimit-limit", v.limit.into());
    set("ratelimit-remaining", v.remaining.into());
    set("ratelimit-reset", secs_up(v.reset));
}

fn refusal(verdict: &Verdict, config: &RateLimits) -> Response {
    let wait = secs_up(verdict.retry_after).max(1);
    let mut refused = ApiError::TooManyRequests(format!(
        "rate limit of {} requests per {} s exceeded; retry in {wait} s",
        verdict.limit,
        config.window.as_secs()
    ))
    .into_response();
    refused
        .headers_mut()
        .insert("retry-after", HeaderValue::from(wait));
    refused
}

async fn check(state: &AppState, limits: &[Limit]) -> Option<Verdict> {
    match state.deps.limiter.check(limits).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "rate limiter unavailable; admitting the request");
            None
        }
    }
}

pub(crate) async fn enforce(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let config = &state.config.rate_limits;
    if !config.enabled || !under_api(req.uri().path()) {
        return next.run(req).await;
    }
    let limits = limits_for(&req, config);
    if limits.is_empty() {
        return next.run(req).await;
    }
    let route = req.extensions().get::<MatchedPath>().cloned();
    let folds = state.deps.intake.folds_rate_limits()
        && route.is_some_and(|r| routes::folds_limits(req.method(), r.as_str()));
    let (mut response, verdict) = if folds {
        let folded = Folded::new(limits.clone());
        req.extensions_mut().insert(folded.clone());
        let response = next.run(req).await;
        let verdict = match folded.verdict() {
            Some(v) => Some(v),
            None => check(&state, &limits).await,
        };
        match verdict {
            // Refused in the accept or the pending read (which wrote and
            // read nothing), or counted after a request that reached
            // neither.
            Some(v) if !v.allowed => (refusal(&v, config), Some(v)),
            other => (response, other),
        }
    } else {
        match check(&state, &limits).await {
            Some(v) if !v.allowed => (refusal(&v, config), Some(v)),
            other => (next.run(req).await, other),
        }
    };
    if let Some(verdict) = verdict {
        describe(response.headers_mut(), &verdict);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_the_path_segment_after_applications() {
        assert_eq!(
            token_in("/api/v1/applications/abc/chats/1"),
            Some(("abc", "/chats/1"))
        );
        assert_eq!(token_in("/api/v1/applications/abc"), Some(("abc", "")));
        assert_eq!(token_in("/api/v1/applications"), None);
        assert_eq!(token_in("/api/v1/applications/"), None);
        assert_eq!(token_in("/health/ready"), None);
    }

    #[test]
    fn every_intake_write_and_read_is_a_documented_operation_of_chats_or_messages() {
        let doc = serde_json::to_value(crate::openapi::document()).unwrap();
        for (method, route) in routes::INTAKE_WRITES.iter().chain(&routes::INTAKE_READS) {
            let documented = doc["paths"][route][method.as_str().to_lowercase()].as_object();
            assert!(documented.is_some(), "{method} {route} is not an operation");
            assert!(
                route.contains("/chats"),
                "{route} is no chat or message route"
            );
        }
        assert!(routes::accepts_through_intake(
            &Method::POST,
            "/api/v1/applications/{token}/chats"
        ));
        assert!(!routes::accepts_through_intake(
            &Method::POST,
            "/api/v1/applications"
        ));
        assert!(!routes::accepts_through_intake(
            &Method::GET,
            "/api/v1/applications/{token}/chats"
        ));
        // A list reads no pending entry: it is checked before it runs.
        assert!(!routes::folds_limits(
            &Method::GET,
            "/api/v1/applications/{token}/chats"
        ));
        assert!(routes::folds_limits(
            &Method::GET,
            "/api/v1/applications/{token}/chats/{number}"
        ));
    }

    #[test]
    fn a_token_limit_is_keyed_by_its_digest_and_kind() {
        let limits = |method: Method, token: &str| {
            let req = Request::builder()
                .method(method)
                .uri(format!("/api/v1/applications/{token}/chats"))
                .body(axum::body::Body::empty())
                .unwrap();
            limits_for(&req, &RateLimits::default())
        };
        let write = limits(Method::POST, "secret-token");
        assert_eq!(write.len(), 2, "the token's and the address's");
        assert_eq!(
            write[0].key,
            format!("w:t:{}", token_digest("secret-token"))
        );
        assert!(write.iter().all(|l| !l.key.contains("secret-token")));
        assert_eq!(
            limits(Method::GET, "secret-token")[0].key,
            format!("r:t:{}", token_digest("secret-token"))
        );
        assert_ne!(limits(Method::POST, "other-token")[0].key, write[0].key);
        // Every spelling of one token is one bucket, as the routes decode
        // the path before they look the token up.
        assert_eq!(
            limits(Method::POST, "%73ecret-%74oken")[0].key,
            write[0].key
        );
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(secs_up(Duration::from_millis(1)), 1);
        assert_eq!(secs_up(Duration::from_millis(1000)), 1);
        assert_eq!(secs_up(Duration::from_millis(1001)), 2);
        assert_eq!(secs_up(Duration::ZERO), 0);
    }
}
