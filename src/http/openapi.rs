//! The OpenAPI 3.1 document, served at `GET /openapi.json`. It is built once at start-up from the
//! same registration as the router: every route is a handler annotated with `#[utoipa::path]` and
//! registered with utoipa-axum's `routes!` on an `OpenApiRouter`, so a route cannot be served
//! without being documented, nor documented without being served (the unsupported operations are
//! registered from their table the same way, in `unsupported.rs`).
//!
//! A handler's annotation lists its success response and the errors only it answers (429, 501,
//! 502, ...). The errors of the extractors are added here, by rule, from the operation's shape, so
//! they cannot be forgotten: 401 (with `WWW-Authenticate`) where the operation needs the bearer
//! key, 400 where it takes path or query parameters or a body, 413 where it takes a body, and 500
//! everywhere (a panic or an outage). Every error is the one `ErrorBody` shape.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::wire;

/// The name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

/// The document as served: JSON, serialized once.
#[derive(Clone)]
pub struct Document(pub Arc<Bytes>);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Easel",
        description = "Easel's REST API: Leonardo.ai's REST v1 (the operations Easel serves, and the SDKs' \
                       operations it does not serve, which answer 501), Easel's extensions (webhook deliveries, \
                       the webhook doctor and test callbacks), image files, health and readiness. Every error is \
                       `{\"error\", \"path\", \"code\"}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(wire::ErrorBody))
)]
struct Base;

/// The document's skeleton, before any route is registered.
pub fn base() -> utoipa::openapi::OpenApi {
    Base::openapi()
}

/// The finished document: the routes' paths with the extractors' errors added, the security
/// scheme and the shared error responses.
pub fn finish(api: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(&api).expect("an OpenAPI document serializes");
    let components = doc["components"].as_object_mut().expect("components are set by `base`");
    components.insert(
        "securitySchemes".into(),
        json!({ BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key of Easel (`easel keys create`), as `Authorization: Bearer <key>`."
        }}),
    );
    components.insert("responses".into(), shared_responses());
    if let Some(paths) = doc["paths"].as_object_mut() {
        // A wildcard (`/cdn/{*key}`) is documented as one parameter that may hold slashes.
        let wildcards: Vec<String> = paths.keys().filter(|path| path.contains("{*")).cloned().collect();
        for path in wildcards {
            let item = paths.remove(&path).expect("listed");
            paths.insert(path.replace("{*", "{"), item);
        }
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for operation in item.values_mut().filter_map(Value::as_object_mut) {
                add_extractor_errors(operation);
                fix_links(operation);
            }
        }
    }
    doc
}

impl Document {
    pub fn new(api: utoipa::openapi::OpenApi) -> Document {
        Document(Arc::new(Bytes::from(serde_json::to_vec(&finish(api)).expect("JSON serializes"))))
    }
}

/// The responses every operation of a kind shares, in `components.responses`.
fn shared_responses() -> Value {
    let error = |description: &str| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
        })
    };
    let mut unauthorized = error("Missing, malformed or unknown API key (code `access-denied`).");
    unauthorized["headers"] = json!({
        "WWW-Authenticate": { "description": "`Bearer`", "required": true, "schema": { "type": "string" } }
    });
    json!({
        "Unauthorized": unauthorized,
        "BadRequest": error(
            "A parameter or the body is invalid (code `validation-failed`, the message names the field) or the \
             body is not JSON (code `parse-failed`)."
        ),
        "PayloadTooLarge": error("The body is larger than `api.max_body_bytes` (code `payload-too-large`)."),
        "InternalError": error("A bug or an outage (code `unexpected`); the cause is logged, not shown."),
    })
}

/// Adds the errors the operation's extractors answer (see the module's documentation).
fn add_extractor_errors(operation: &mut serde_json::Map<String, Value>) {
    let authenticated = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|requirements| requirements.iter().any(|r| r.as_object().is_some_and(|r| !r.is_empty())));
    let has_parameters = operation.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
    let has_body = operation.contains_key("requestBody");
    let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    let mut add = |status: &str, name: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| json!({ "$ref": format!("#/components/responses/{name}") }));
    };
    if authenticated {
        add("401", "Unauthorized");
    }
    if has_parameters || has_body {
        add("400", "BadRequest");
    }
    if has_body {
        add("413", "PayloadTooLarge");
    }
    add("500", "InternalError");
}

/// utoipa 5.5 writes a link's fields in snake case (`operation_id`); OpenAPI spells them in camel
/// case (`operationId`), which is what tools (schemathesis's stateful phase) read.
fn fix_links(operation: &mut serde_json::Map<String, Value>) {
    let responses = operation.get_mut("responses").and_then(Value::as_object_mut);
    for response in responses.into_iter().flat_map(|r| r.values_mut()) {
        let links = response.get_mut("links").and_then(Value::as_object_mut);
        for link in links.into_iter().flat_map(|l| l.values_mut()).filter_map(Value::as_object_mut) {
            for (snake, camel) in
                [("operation_id", "operationId"), ("operation_ref", "operationRef"), ("request_body", "requestBody")]
            {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.into(), value);
                }
            }
        }
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "getOpenApiDocument",
    responses((status = 200, description = "This OpenAPI 3.1 document", body = Object))
)]
pub async fn serve_document(Extension(document): Extension<Document>) -> Response {
    let mut response = Bytes::clone(&document.0).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
