//! The OpenAPI 3.1 document and Swagger UI.
//!
//! Each handler's `#[utoipa::path]` states its own success responses, and
//! the route is registered together with that description
//! (`utoipa_axum::routes!`), so a served route cannot lack one. What every
//! route shares is added here, by the same rules the middleware and
//! extractors follow: the problem responses, the three body encodings
//! `Input` reads, and the headers every response carries.
use axum::Router;
use serde_json::json;
use utoipa::{
    OpenApi,
    openapi::{
        self, Content, HttpMethod, Ref, RefOr, ResponseBuilder,
        header::{Header, HeaderBuilder},
        link::LinkBuilder,
        schema::{ObjectBuilder, Schema, Type},
    },
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::{API_PREFIX, AppState, error::Problem, metrics::TRACE_ID_HEADER, routes, under_api};

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/api-docs/openapi.json";
/// Where Swagger UI is served.
pub const UI_PATH: &str = "/docs";

/// The body encodings every write accepts; see `input`.
const BODY_ENCODINGS: [&str; 3] = [
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
];
const PROBLEM_JSON: &str = "application/problem+json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chat",
        description = "Applications, their numbered chats, and the chats' numbered messages. \
            Writes are accepted at once and persisted in the background; a 2xx write is never lost. \
            Every error is an RFC 9457 problem (`application/problem+json`). \
            Bodies may be JSON, `application/x-www-form-urlencoded` or `multipart/form-data`. \
            Every POST, PUT and PATCH takes an `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header): \
            sent again with the same key and request within 24 h, it answers its first response and writes nothing new.",
    ),
    paths(crate::metrics::scrape),
    components(schemas(Problem)),
    tags(
        (name = "applications", description = "Applications, named by their secret token"),
        (name = "chats", description = "Chats, numbered within their application"),
        (name = "messages", description = "Messages, numbered within their chat, and their search"),
        (name = "health", description = "Probes for orchestrators; not rate limited"),
        (name = "metrics", description = "Prometheus scraping; not rate limited"),
    )
)]
struct ApiDoc;

/// Every documented route, with its description.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(API_PREFIX, routes::api())
        .merge(routes::health::router())
}

/// The whole document: what `routes()` collected, completed.
pub fn document() -> openapi::OpenApi {
    let mut doc = routes().into_openapi();
    complete(&mut doc);
    doc
}

/// Serves `doc` at [`DOCUMENT_PATH`] and Swagger UI at [`UI_PATH`].
pub(crate) fn ui(doc: openapi::OpenApi) -> Router<AppState> {
    SwaggerUi::new(UI_PATH).url(DOCUMENT_PATH, doc).into()
}

/// Adds to each operation what its annotation leaves to the shared rules.
pub(crate) fn complete(doc: &mut openapi::OpenApi) {
    link_created_resources(doc);
    for (path, item) in doc.paths.paths.iter_mut() {
        let api = under_api(path);
        let names_application = path.contains("{token}");
        for (method, operation) in operations(item) {
            let writes = matches!(
                method,
                HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch
            );
            if writes && let Some(RefOr::T(body)) = operation.request_body.as_mut() {
                drop_null_body(body);
                let json = body.content.get("application/json").cloned();
                if let Some(json) = json {
                    for encoding in BODY_ENCODINGS {
                        body.content
                            .entry(encoding.to_owned())
                            .or_insert_with(|| json.clone());
                    }
                }
            }
            let mut problems = Vec::new();
            if api {
                problems.extend([400, 429, 500, 503]);
                if names_application {
                    problems.push(404);
                }
                if writes {
                    problems.extend([409, 413, 415, 422]);
                    operation
                        .parameters
                        .get_or_insert_with(Vec::new)
                        .push(RefOr::T(idempotency_key_parameter()));
                }
            }
            if path == "/health/ready" {
                problems.push(503);
            }
            let responses = &mut operation.responses.responses;
            for status in problems {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| RefOr::T(problem(status)));
            }
            for response in responses.values_mut() {
                if let RefOr::T(response) = response {
                    let headers = &mut response.headers;
                    headers.insert("x-request-id".into(), RefOr::T(request_id_header()));
                    headers.insert(TRACE_ID_HEADER.into(), RefOr::T(trace_id_header()));
                    if api {
                        for (name, header) in rate_limit_headers() {
                            headers.entry(name.into()).or_insert(RefOr::T(header));
                        }
                    }
                }
            }
        }
    }
}

/// `Option<T>` as a `request_body` marks the body optional, and utoipa
/// also renders it as "T or null". Only no body at all is accepted, not a
/// JSON `null`, so the null is dropped.
fn drop_null_body(body: &mut openapi::request_body::RequestBody) {
    for content in body.content.values_mut() {
        if let RefOr::T(content) = content
            && let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema
        {
            let not_null: Vec<_> = one_of
                .items
                .iter()
                .filter(|s| serde_json::to_value(s).ok() != Some(json!({ "type": "null" })))
                .cloned()
                .collect();
            if let [only] = &not_null[..] {
                content.schema = Some(only.clone());
            }
        }
    }
}

/// The path parameters of a path template, in order.
fn parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// Links each `201 Created` to the operations on what it created and on
/// what lies under it, so clients (and schemathesis's stateful phase) can
/// follow a create to its reads and updates. The new parameter comes from
/// the created body: an application's `token`, a chat's or message's
/// `number`; the others from the create's own path.
fn link_created_resources(doc: &mut openapi::OpenApi) {
    let mut ids = Vec::new();
    for (path, item) in doc.paths.paths.iter_mut() {
        for (_, op) in operations(item) {
            if let Some(id) = &op.operation_id {
                ids.push((path.clone(), id.clone()));
            }
        }
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let Some(RefOr::T(created)) = item
            .post
            .as_mut()
            .and_then(|op| op.responses.responses.get_mut("201"))
        else {
            continue;
        };
        let own = parameters(path);
        for (target, id) in &ids {
            let Some(rest) = target.strip_prefix(path.as_str()) else {
                continue;
            };
            let theirs = parameters(target);
            if !rest.starts_with("/{") || theirs.len() != own.len() + 1 {
                continue;
            }
            let mut link = LinkBuilder::new().operation_id(id);
            for name in theirs {
                let value = if own.contains(&name) {
                    format!("$request.path.{name}")
                } else if name == "token" {
                    "$response.body#/token".to_owned()
                } else {
                    "$response.body#/number".to_owned()
                };
                link = link.parameter(name, value);
            }
            created.links.insert(id.clone(), RefOr::T(link.build()));
        }
    }
}

fn operations(item: &mut openapi::PathItem) -> Vec<(HttpMethod, &mut openapi::path::Operation)> {
    [
        (HttpMethod::Get, item.get.as_mut()),
        (HttpMethod::Put, item.put.as_mut()),
        (HttpMethod::Post, item.post.as_mut()),
        (HttpMethod::Delete, item.delete.as_mut()),
        (HttpMethod::Options, item.options.as_mut()),
        (HttpMethod::Head, item.head.as_mut()),
        (HttpMethod::Patch, item.patch.as_mut()),
        (HttpMethod::Trace, item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.map(|op| (method, op)))
    .collect()
}

fn problem(status: u16) -> openapi::Response {
    let description = match status {
        400 => "The path, query string, body or Idempotency-Key is malformed",
        404 => "The application, chat or message does not exist",
        409 => {
            "Another request with this Idempotency-Key is in progress; retry after `Retry-After` seconds"
        }
        413 => "The body is larger than allowed",
        415 => "The Content-Type is not one of the accepted encodings",
        422 => {
            "A field is missing or invalid, or the Idempotency-Key was used for a different request"
        }
        429 => "A rate limit was reached; retry after `Retry-After` seconds",
        500 => {
            "The server failed to handle the request; or (`/problems/outcome-unknown`) a write \
                reached storage and its outcome could not be confirmed: send it again with the same \
                Idempotency-Key to learn it"
        }
        503 => "Overloaded, timed out or storage unavailable; retry later",
        _ => "A problem",
    };
    let mut response = ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    if matches!(status, 409 | 429 | 503) {
        response = response.header("Retry-After", retry_after_header(status));
    }
    response.build()
}

/// The optional `Idempotency-Key` request header of every write.
fn idempotency_key_parameter() -> openapi::path::Parameter {
    openapi::path::ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(openapi::path::ParameterIn::Header)
        .required(openapi::Required::False)
        .description(Some(
            "A key of the client's choice, unique per intended write (a UUID, say), in the \
             draft's quoted form (`\"8e03978e-…\"`) or bare; 1 to 255 printable ASCII \
             characters. The same key with the same request within 24 h answers the first \
             response again, with the same number, and writes nothing new; with a different \
             request, 422; while the first is still running, 409.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(257)),
        ))
        .build()
}

fn header(kind: Type, description: &str) -> Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(kind)))
        .description(Some(description))
        .build()
}

fn request_id_header() -> Header {
    header(
        Type::String,
        "Identifies this request in logs and traces: the client's own when it sent a sane one",
    )
}

fn trace_id_header() -> Header {
    header(
        Type::String,
        "The OpenTelemetry trace id of this request, when tracing is on",
    )
}

fn retry_after_header(status: u16) -> Header {
    let when = match status {
        429 => "Seconds until the limit lets this request through",
        409 => "Seconds to wait before sending the request again under its key",
        _ => "Seconds to wait before retrying, when the server shed the request",
    };
    header(Type::Integer, when)
}

fn rate_limit_headers() -> [(&'static str, Header); 3] {
    [
        (
            "RateLimit-Limit",
            header(
                Type::Integer,
                "Requests allowed per window by the tightest limit",
            ),
        ),
        (
            "RateLimit-Remaining",
            header(Type::Integer, "Requests left in the window"),
        ),
        (
            "RateLimit-Reset",
            header(Type::Integer, "Seconds until the window is full again"),
        ),
    ]
}
