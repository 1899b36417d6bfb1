//! The OpenAPI 3.1 document at `/openapi.json`: its shape, that it lists exactly the routes Easel
//! serves, that its request schemas name only fields the parsers read, and schemathesis (pinned in
//! `tests/openapi/requirements.txt`) fuzzing a live server from it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::*;

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];

async fn document(app: &TestApp) -> Value {
    let reply = app.send(app.client.get(format!("{}/openapi.json", app.origin))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "application/json");
    reply.body
}

/// Every (METHOD, path) the document lists.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys().filter(|m| METHODS.contains(&m.as_str())) {
            operations.insert((method.to_uppercase(), path.clone()));
        }
    }
    operations
}

/// Follows a local `$ref`.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => doc.pointer(reference.trim_start_matches('#')).expect("the $ref resolves"),
        None => value,
    }
}

/// Every path a `.route("...")` call names in the source: routes registered past the document.
fn routes_named_in_source() -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file");
                for (index, _) in text.match_indices(".route(\"") {
                    let rest = &text[index + ".route(\"".len()..];
                    let route = &rest[..rest.find('"').expect("a closing quote")];
                    found.push((path.display().to_string(), route.to_string()));
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn the_document_is_openapi_3_1_served_without_a_key_and_lists_every_route_it_serves() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "Easel");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let operations = operations(&doc);

    // Routes added with a bare `.route(...)` are served but not documented.
    let undocumented = routes_named_in_source();
    assert!(
        undocumented.is_empty(),
        "routes registered with `.route(...)` are missing from /openapi.json: annotate the handler with \
         #[utoipa::path] and register it with `routes!` (ARCHITECTURE.md, \"How to add\"): {undocumented:?}"
    );

    // Every SDK operation Easel answers 501 for is in the document, under the REST prefix.
    for &(method, path, operation, _) in easel::http::UNSUPPORTED {
        let path = format!("/api/rest/v1{path}");
        assert!(operations.contains(&(method.to_string(), path.clone())), "{method} {path} ({operation}) missing");
        let documented = &doc["paths"][&path][method.to_lowercase()];
        assert_eq!(documented["operationId"], operation);
        assert!(documented["responses"]["501"].is_object(), "{documented}");
    }
    for expected in [
        ("POST", "/api/rest/v1/generations"),
        ("GET", "/api/rest/v1/generations/{id}"),
        ("DELETE", "/api/rest/v1/generations/{id}"),
        ("GET", "/api/rest/v1/me"),
        ("POST", "/api/rest/v1/webhook/test"),
        ("GET", "/cdn/{key}"),
        ("POST", "/uploads/{id}"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/egress-ips"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ] {
        assert!(operations.contains(&(expected.0.to_string(), expected.1.to_string())), "{expected:?} missing");
    }

    // Links name their target operation as OpenAPI spells it, and the target exists.
    let ids: BTreeSet<&str> = operations
        .iter()
        .filter_map(|(method, path)| doc["paths"][path][method.to_lowercase()]["operationId"].as_str())
        .collect();
    let links = doc.pointer("/paths/~1api~1rest~1v1~1generations/post/responses/200/links").expect("links");
    assert_eq!(links["getGeneration"]["operationId"], "getGenerationById", "{links}");
    for (method, path) in &operations {
        for response in doc["paths"][path][method.to_lowercase()]["responses"].as_object().unwrap().values() {
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                let target = link["operationId"].as_str().unwrap_or_default();
                assert!(ids.contains(target), "{method} {path}: link {name} names no operation: {link}");
            }
        }
    }

    // Every documented operation is served: none reaches the router's fallbacks.
    let user = app.new_user("documented").await;
    for (method, path) in &operations {
        if path.starts_with("/cdn/") || path.starts_with("/console/assets/") {
            continue; // its handler answers 404 for a file it does not hold, like the fallback
        }
        let concrete = path
            .split('/')
            .map(|segment| if segment.starts_with('{') { uuid::Uuid::new_v4().to_string() } else { segment.into() })
            .collect::<Vec<_>>()
            .join("/");
        let url = format!("{}{concrete}", app.origin);
        let request = app
            .client
            .request(method.parse().unwrap(), &url)
            .bearer_auth(&user.key)
            .timeout(std::time::Duration::from_secs(30));
        let request = if method == "GET" || method == "DELETE" { request } else { request.json(&json!({})) };
        let reply = app.send(request).await;
        assert_ne!(reply.status, 405, "{method} {path} is documented but not served: {}", reply.text);
        assert!(
            !(reply.status == 404 && reply.body["error"] == "resource does not exist"),
            "{method} {path} is documented but not served: {}",
            reply.text
        );
        let documented = &doc["paths"][path][method.to_lowercase()]["responses"];
        assert!(
            documented[reply.status.as_str()].is_object(),
            "{method} {path} answered {} which it does not document: {}",
            reply.status,
            reply.text
        );
    }

    // The extractors' errors are documented by rule, in the one error shape.
    for (method, path) in &operations {
        let operation = &doc["paths"][path][method.to_lowercase()];
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.contains_key("500"), "{method} {path}: no 500");
        let secured = operation["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        if secured {
            assert!(responses.contains_key("401"), "{method} {path}: needs the key, and 401 is not documented");
        } else if path != "/metrics" {
            // (`/metrics` answers 401 when `metrics.token` is set: its own token, not an API key.)
            assert!(!responses.contains_key("401"), "{method} {path}: needs no key, and documents 401");
        }
        if path.starts_with("/api/rest/v1/") {
            assert!(secured, "{method} {path}: every REST operation needs the key");
        }
        for (status, response) in responses {
            // 503 of /healthz and /readyz is their own shape, naming what fails.
            if status.starts_with('4') || (status.starts_with('5') && status != "503") {
                let schema = &resolve(&doc, response)["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
            }
        }
    }
}

#[tokio::test]
async fn a_node_without_the_api_documents_only_what_it_serves() {
    let app = spawn_app_with(|config| {
        config.roles = vec![easel::config::Role::Render, easel::config::Role::Deliver];
        config.metrics.enabled = false;
    })
    .await;
    let doc = document(&app).await;
    let paths: BTreeSet<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(paths, BTreeSet::from(["/egress-ips", "/healthz", "/openapi.json", "/readyz"]));
    let reply = app.send(app.client.get(app.api("/me"))).await;
    assert_eq!(reply.status, 404);
}

/// A value of the type `schema` names that the parsers accept, for the required fields.
fn valid_value(doc: &Value, schema: &Value) -> Value {
    let schema = resolve(doc, schema);
    if let Some(first) = schema["enum"].as_array().and_then(|values| values.first()) {
        return first.clone();
    }
    match (schema["type"].as_str(), schema["format"].as_str()) {
        (_, Some("uuid")) => json!(uuid::Uuid::new_v4().to_string()),
        (Some("string"), _) => json!("a lighthouse at dusk"),
        (Some("integer" | "number"), _) => schema["minimum"].clone(),
        (Some("boolean"), _) => json!(false),
        other => panic!("no valid value for {other:?}: {schema}"),
    }
}

/// Whether `schema` (or one of its `oneOf` branches) is an object.
fn is_object(doc: &Value, schema: &Value) -> bool {
    let schema = resolve(doc, schema);
    schema["type"] == "object"
        || schema["properties"].is_object()
        || schema["oneOf"].as_array().is_some_and(|branches| branches.iter().any(|b| is_object(doc, b)))
}

/// The request bodies document only fields the parsers read: each documented field, sent with a
/// value of the wrong type, is refused with a message that names it (a field the parser ignored
/// would be accepted, or refused for something else).
#[tokio::test]
async fn every_documented_body_field_is_read_by_the_parser() {
    let app = spawn_app().await;
    // A key that may manage keys, so the key routes read their bodies.
    let store = &*app.easel.store;
    let created = easel::admin::create_user(store, "fields", 10).await.expect("user created");
    let spec = easel::admin::KeySpec {
        user: created.id,
        name: "fields",
        webhook_url: None,
        webhook_api_key: None,
        manage_keys: true,
        own_bins: None,
    };
    let key = easel::admin::create_key(store, &app.easel.master_key, &spec, &app.config.webhook).await.unwrap();
    let user = TestUser { id: created.id, key: key.key };
    let doc = document(&app).await;
    let mut checked = 0;
    for (method, path) in operations(&doc) {
        let operation = &doc["paths"][&path][method.to_lowercase()];
        let Some(schema) = operation["requestBody"]["content"]["application/json"]["schema"].as_object() else {
            continue;
        };
        let schema = resolve(&doc, &Value::Object(schema.clone())).clone();
        let required: Vec<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let mut base = serde_json::Map::new();
        for field in &required {
            base.insert(field.to_string(), valid_value(&doc, &schema["properties"][field]));
        }
        if path.ends_with("/universal-upscaler") {
            // One source is required, though no one field is.
            base.insert("generatedImageId".into(), json!(uuid::Uuid::new_v4().to_string()));
        }
        for (field, property) in schema["properties"].as_object().expect("properties") {
            let wrong = if is_object(&doc, property) { json!("text") } else { json!({"a": 1}) };
            let mut body = base.clone();
            body.insert(field.clone(), wrong);
            // Ids in the path name nothing: the body is read before the object is looked up.
            let concrete = path
                .split('/')
                .map(|segment| if segment.starts_with('{') { uuid::Uuid::new_v4().to_string() } else { segment.into() })
                .collect::<Vec<_>>()
                .join("/");
            let url = format!("{}{concrete}", app.origin);
            let request = app.client.request(method.parse().unwrap(), &url);
            let reply = app.send(request.bearer_auth(&user.key).json(&body)).await;
            assert_eq!(reply.status, 400, "{path} {field}: {}", reply.text);
            let message = reply.body["error"].as_str().unwrap_or_default();
            assert!(
                message.contains(&format!("`{field}`")),
                "{path}: the documented field `{field}` sent with the wrong type was refused for something else \
                 (is it read by the parser?): {message}"
            );
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} fields were checked");
}

/// schemathesis, from `/openapi.json`, against a live server: every operation, positive and
/// negative data, no 5xx and no response the document does not describe (status, content type,
/// headers, body). SQLite only: the run takes minutes, and it checks the HTTP surface, which is the
/// same on both databases (the store is covered twice by the other tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    if not_applicable(Backend::Sqlite, "the HTTP surface is the same on both databases; one fuzzing run is enough") {
        return;
    }
    let Some(python) = crate::sdk::python_or_skip("openapi", "schemathesis_finds_nothing") else {
        return;
    };
    // The key calls back a real receiver, so the doctor, test callbacks and the delivery log answer
    // with their full shapes rather than "this key has no webhook".
    let ca = crate::receiver::TestCa::new();
    let receiver = crate::receiver::TestReceiver::https(&ca, |_| crate::receiver::Reply::ok()).await;
    let app = spawn_app_with(|config| {
        fast_webhooks(config, &ca, &["0s"]);
        // Bins the fuzzer makes (and then calls, through inferred links) answer within its timeout.
        config.inspector.max_delay = std::time::Duration::from_secs(1);
    })
    .await;
    let store = &*app.easel.store;
    // Generations and variations the fuzzer makes must not fill the slots (429 would hide the rest).
    let user = easel::admin::create_user(store, "fuzzer", 1_000_000).await.expect("user created");
    let key = easel::admin::create_api_key(
        store,
        &app.easel.master_key,
        user.id,
        "fuzzer",
        Some(&receiver.url),
        Some("abcd"),
        &app.config.webhook,
    )
    .await
    .expect("key created");
    let user = TestUser { id: user.id, key: key.key.clone() };
    let schemathesis = python.parent().expect("the venv's bin").join("schemathesis");
    let all_checks = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";
    // The SDK operations Easel does not serve answer 501 by design (documented): every check but
    // "not a server error" applies to them.
    let runs = [
        ("served", all_checks, "--exclude-tag", 60, "examples,coverage,fuzzing,stateful"),
        // (No links among them: nothing to chain in a stateful phase.)
        ("unsupported", &all_checks["not_a_server_error,".len()..], "--include-tag", 10, "examples,coverage,fuzzing"),
    ];
    for (name, checks, filter, examples, phases) in runs {
        let mut run = Command::new(&schemathesis);
        run.arg("run")
            .arg(format!("{}/openapi.json", app.origin))
            .args(["--header", &format!("Authorization: Bearer {}", user.key)])
            .args(["--checks", checks, filter, "unsupported"])
            // A bin's live stream never ends by itself: a request/response fuzzer can only time out on it.
            .args(["--exclude-operation-id", "followBin"])
            .args(["--phases", phases])
            // One worker: CPython 3.11.7's `ast.parse` is not safe across threads (hypothesis
            // parses its own lambdas while generating; two workers failed once with "AST constructor
            // recursion depth mismatch", a CPython bug fixed in 3.11.8).
            .args(["--max-examples", &examples.to_string(), "--seed", "20261129", "--workers", "1"])
            .args(["--request-timeout", "30", "--suppress-health-check", "all"])
            .args(["--report", "junit", "--report-dir"])
            .arg(app.dir.path().join(format!("schemathesis-{name}")))
            .env("NO_COLOR", "1")
            .current_dir(app.dir.path()); // its cache (`.schemathesis/`) stays out of the checkout
        let output = tokio::task::spawn_blocking(move || run.output().expect("schemathesis runs")).await.unwrap();
        report(name, output);
    }
}

/// Fails with schemathesis's report if it found anything; prints its summary otherwise.
fn report(name: &str, output: std::process::Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "schemathesis ({name} operations) found problems:\n{stdout}\n{stderr}");
    eprintln!("schemathesis ({name} operations):\n{stdout}");
}
