//! Bad input gets a 4xx in Easel's error shape, naming the field: never axum's plain text, never a
//! 500, never a panic.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

fn assert_error_shape(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert!(reply.headers["content-type"].to_str().unwrap().starts_with("application/json"), "{}", reply.text);
    let keys: Vec<&String> = reply.body.as_object().expect("a JSON object").keys().collect();
    assert_eq!(keys, ["error", "path", "code"], "{}", reply.text);
    assert_eq!(reply.body["path"], "$");
    assert_eq!(reply.body["code"], code, "{}", reply.text);
}

#[tokio::test]
async fn every_documented_constraint_is_enforced_with_a_message_naming_the_field() {
    let app = spawn_app().await;
    let with = |extra: Value| {
        let mut body = json!({"prompt": "p", "width": 512, "height": 512, "num_images": 1});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (with(json!({"width": 30})), "width", "between 32 and 1536 and a multiple of 8"),
        (with(json!({"width": 1540})), "width", "between 32 and 1536"),
        (with(json!({"height": 100})), "height", "multiple of 8"),
        (with(json!({"height": "512"})), "height", "got a string"),
        (with(json!({"num_images": 9})), "num_images", "between 1 and 8"),
        (with(json!({"num_images": 5, "width": 1024})), "num_images", "between 1 and 4"),
        (with(json!({"num_images": 0})), "num_images", "between 1 and 8"),
        (with(json!({"num_inference_steps": 5})), "num_inference_steps", "between 10 and 60"),
        (with(json!({"guidance_scale": 25})), "guidance_scale", "between 1 and 20"),
        (with(json!({"seed": -3})), "seed", "between 0 and 9999999998"),
        (
            with(json!({"init_strength": 0.95, "init_generation_image_id": uuid::Uuid::new_v4()})),
            "init_strength",
            "between 0.1 and 0.9",
        ),
        (with(json!({"contrast": 2})), "contrast", "one of"),
        (with(json!({"photoRealStrength": 0.7})), "photoRealStrength", "one of 0.55, 0.5, 0.45"),
        (with(json!({"promptMagicStrength": 2})), "promptMagicStrength", "between 0.1 and 1"),
        (with(json!({"scheduler": "SLOW"})), "scheduler", "EULER_DISCRETE"),
        (with(json!({"presetStyle": "SHINY"})), "presetStyle", "DYNAMIC"),
        (with(json!({"sd_version": "v9"})), "sd_version", "SDXL_1_0"),
        (with(json!({"modelId": "00000000-0000-0000-0000-000000000000"})), "modelId", "platformModels"),
        (with(json!({"public": "yes"})), "public", "a boolean"),
        (
            with(json!({"controlnets": [{"initImageId": "x", "preprocessorId": 1}]})),
            "controlnets[0].initImageId",
            "not a UUID",
        ),
        (with(json!({"elements": [{"akUUID": "x"}]})), "elements[0].akUUID", "no element"),
        (with(json!({"prompt": ""})), "prompt", "must not be empty"),
        (with(json!({"prompt": 12})), "prompt", "a string"),
        (json!({"width": 512}), "prompt", "required"),
    ];
    for (body, field, expected) in cases {
        let reply = app.post(&app.admin, "/generations", &body).await;
        assert_error_shape(&reply, StatusCode::BAD_REQUEST, "validation-failed");
        let message = reply.body["error"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{body}: {message}");
        assert!(message.contains(expected), "{body}: {message}");
    }
}

#[tokio::test]
async fn malformed_bodies_get_a_400_in_the_error_shape() {
    let app = spawn_app().await;
    let post_raw = |body: &'static str| {
        app.client
            .post(app.api("/generations"))
            .bearer_auth(&app.admin.key)
            .header("content-type", "application/json")
            .body(body)
    };
    for body in ["{bad json", "[1, 2, 3]", "\"just a string\"", "", "null", "{\"prompt\": \"p\",}"] {
        let reply = app.send(post_raw(body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body:?}: {}", reply.text);
        assert_eq!(reply.body["path"], "$", "{body:?}");
        assert!(["parse-failed", "validation-failed"].contains(&reply.body["code"].as_str().unwrap()), "{body:?}");
    }
    // A text/plain content type is not an excuse for axum's default rejection.
    let reply = app
        .send(
            app.client
                .post(app.api("/generations"))
                .bearer_auth(&app.admin.key)
                .header("content-type", "text/plain")
                .body("{"),
        )
        .await;
    assert_error_shape(&reply, StatusCode::BAD_REQUEST, "parse-failed");
}

#[tokio::test]
async fn oversized_bodies_are_refused_in_the_error_shape() {
    let app = spawn_app().await;
    let huge = json!({"prompt": "x".repeat(app.config.api.max_body_bytes + 10)});
    let reply = app.post(&app.admin, "/generations", &huge).await;
    assert_error_shape(&reply, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
    assert!(reply.body["error"].as_str().unwrap().contains(&app.config.api.max_body_bytes.to_string()));
}

#[tokio::test]
async fn ids_in_paths_must_be_uuids() {
    let app = spawn_app().await;
    for path in ["/generations/not-a-uuid", "/variations/42", "/generations/user/someone"] {
        let reply = app.get(&app.admin, path).await;
        assert_error_shape(&reply, StatusCode::BAD_REQUEST, "validation-failed");
        assert!(reply.body["error"].as_str().unwrap().contains("must be a UUID"), "{path}");
    }
    let reply = app.delete(&app.admin, "/generations/../me").await;
    assert!(reply.status.is_client_error(), "{}", reply.status);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = spawn_app().await;
    let reply = app.get(&app.admin, "/no/such/route").await;
    assert_error_shape(&reply, StatusCode::NOT_FOUND, "not-found");
    let reply = app.send(app.client.put(app.api("/generations")).bearer_auth(&app.admin.key)).await;
    assert_error_shape(&reply, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
    let reply = app.send(app.client.get(format!("{}/cdn/users/x/../../master.key", app.origin))).await;
    assert_error_shape(&reply, StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn authentication_failures_are_answered_uniformly() {
    let app = spawn_app().await;
    let deleted = app.new_user("leaver").await;
    let keys = easel::store::Store::list_api_keys(&*app.easel.store, Some(deleted.id)).await.unwrap();
    easel::store::Store::delete_api_key(&*app.easel.store, keys[0].id, 0).await.unwrap();
    let requests = [
        app.client.get(app.api("/me")),
        app.client.get(app.api("/me")).header("authorization", "Basic dXNlcjpwYXNz"),
        app.client.get(app.api("/me")).header("authorization", "Bearer"),
        app.client.get(app.api("/me")).bearer_auth("not-a-key"),
        app.client.get(app.api("/me")).bearer_auth(uuid::Uuid::new_v4().to_string()),
        app.client.get(app.api("/me")).bearer_auth(&deleted.key),
        app.client.post(app.api("/generations")).bearer_auth("nope").json(&small_generation("p")),
    ];
    let mut bodies = Vec::new();
    for request in requests {
        let reply = app.send(request).await;
        assert_error_shape(&reply, StatusCode::UNAUTHORIZED, "access-denied");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
        bodies.push(reply.text);
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "every authentication failure must look the same: {bodies:?}");
}
