//! The pages' frame (header, navigation, banner), the error page, the
//! audit trail, and the helpers the other pages share. Every splice is
//! escaped by maud; the only unescaped text is this crate's own CSS and
//! script. Everything works with JavaScript off except the overview's
//! live refresh and "select all".
use axum::{Extension, extract::State};
use chat_ops::audit;
use chat_queue::QueueName;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::{Dashboard, auth::Operator, error::DashError, search};

const STYLE: &str = include_str!("assets/dashboard.css");
const SCRIPT: &str = include_str!("assets/live.js");
/// Characters of a message body shown before the "show all" toggle.
const BODY_PREVIEW: usize = 200;

pub(crate) fn layout(
    title: &str,
    operator: Option<&Operator>,
    read_only: bool,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · chat admin" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a.brand href="/admin" { "chat admin" }
                    @if let Some(op) = operator {
                        nav {
                            a href="/admin" { "Overview" }
                            a href="/admin/search" { "Search" }
                            a href="/admin/scheduler" { "Scheduler" }
                            a href="/admin/health" { "Data health" }
                            a href="/admin/audit" { "Audit" }
                        }
                        span.who { "signed in as " (op.name) }
                        form.inline method="post" action="/admin/logout" {
                            button type="submit" { "Log out" }
                        }
                    }
                }
                @if read_only {
                    p.banner { "Read-only: DASHBOARD_READ_ONLY is set, so no action is offered." }
                }
                main { (body) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// A problem as a page: what went wrong, with the navigation and the
/// search form to go on from.
pub(crate) fn error_page(
    operator: Option<&Operator>,
    read_only: bool,
    title: &str,
    detail: &str,
) -> Markup {
    layout(
        title,
        operator,
        read_only,
        html! {
            h1 { (title) }
            p.error #problem { (detail) }
            @if operator.is_some() {
                h2 { "Look a job up" }
                (search::search_form(&Default::default()))
                p { a href="/admin" { "Back to the overview" } }
            } @else {
                p { a href="/admin/login" { "Log in" } }
            }
        },
    )
}

pub(crate) fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// The payload as indented JSON, with long string values (message
/// bodies) cut to a preview; `None` when nothing was cut.
pub(crate) fn previews(payload: &str) -> (String, Option<String>) {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(payload) else {
        return (payload.to_owned(), None);
    };
    let full = serde_json::to_string_pretty(&value).unwrap_or_else(|_| payload.to_owned());
    let mut cut = false;
    shorten(&mut value, &mut cut);
    let short = serde_json::to_string_pretty(&value).unwrap_or_else(|_| payload.to_owned());
    if cut {
        (short, Some(full))
    } else {
        (full, None)
    }
}

fn shorten(value: &mut serde_json::Value, cut: &mut bool) {
    match value {
        serde_json::Value::String(s) if s.chars().count() > BODY_PREVIEW => {
            let kept: String = s.chars().take(BODY_PREVIEW).collect();
            *s = format!("{kept}… ({} characters in all)", s.chars().count());
            *cut = true;
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| shorten(v, cut)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| shorten(v, cut)),
        _ => {}
    }
}

/// The trace id inside a W3C `traceparent`.
pub(crate) fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1).filter(|id| id.len() == 32)
}

pub(crate) fn job_type(q: QueueName) -> &'static str {
    match q {
        QueueName::Chats => "PersistChat",
        QueueName::Messages => "PersistMessage",
        QueueName::Index => "IndexMessages",
    }
}

pub(crate) async fn audit_page(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
) -> Result<Markup, DashError> {
    let entries = audit::recent(&d.deps.db, 200).await?;
    Ok(layout(
        "Audit",
        Some(&op),
        d.config.read_only,
        html! {
            h1 { "Audit" }
            (audit_table("audit", &entries))
        },
    ))
}

/// Operator actions, newest first.
pub(crate) fn audit_table(id: &str, entries: &[audit::AuditEntry]) -> Markup {
    html! {
        table id=(id) {
            thead { tr { th { "when" } th { "who" } th { "action" } th { "queue" } th { "job" } th { "detail" } } }
            tbody {
                @if entries.is_empty() {
                    tr { td colspan="6" { "No action yet." } }
                }
                @for e in entries {
                    tr {
                        td { (when(e.at)) } td { (e.actor) } td { (e.action) } td { (e.queue) }
                        td { (e.job_id.as_deref().unwrap_or("")) } td { (e.detail.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_are_cut_in_the_preview_and_kept_in_full() {
        let body = "x".repeat(500);
        let (short, full) = previews(&format!("{{\"body\":\"{body}\",\"number\":3}}"));
        assert!(short.contains("(500 characters in all)"), "{short}");
        assert!(full.expect("something was cut").contains(&body));
        let (_, none) = previews("{\"body\":\"short\"}");
        assert!(none.is_none());
    }

    #[test]
    fn markup_is_escaped() {
        let page = layout("<script>", None, false, html! { p { ("<b>&") } }).into_string();
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("&lt;b&gt;&amp;"));
    }
}
