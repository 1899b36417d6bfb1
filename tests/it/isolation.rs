//! Tenant isolation: one user's key never reaches another user's generations, images or
//! variations; they are answered as if they did not exist.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn another_users_objects_look_like_they_do_not_exist() {
    let app = spawn_app().await;
    let alice = app.new_user("alice").await;
    let mallory = app.new_user("mallory").await;

    let id = app.create_generation(&alice, &small_generation("alice's cat")).await;
    let generation = app.finished_generation(&alice, &id).await;
    let image_id = generation["generated_images"][0]["id"].as_str().unwrap().to_string();
    let reply = app.post(&alice, "/variations/upscale", &json!({"id": image_id})).await;
    let variation_id = reply.body["sdUpscaleJob"]["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(30), || async {
        let reply = app.get(&alice, &format!("/variations/{variation_id}")).await;
        (reply.body["generated_image_variation_generic"][0]["status"] == "COMPLETE").then_some(())
    })
    .await;

    let missing = uuid::Uuid::new_v4();
    let pairs = [
        (format!("/generations/{id}"), format!("/generations/{missing}")),
        (format!("/variations/{variation_id}"), format!("/variations/{missing}")),
        (format!("/generations/user/{}", alice.id), format!("/generations/user/{missing}")),
        (format!("/generations/{id}/deliveries"), format!("/generations/{missing}/deliveries")),
    ];
    for (theirs, nonexistent) in pairs {
        let reply = app.get(&mallory, &theirs).await;
        let baseline = app.get(&mallory, &nonexistent).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, baseline.body, "{theirs} must look like {nonexistent}");
    }

    let reply = app.delete(&mallory, &format!("/generations/{id}")).await;
    assert_eq!(reply.body, json!({"delete_generations_by_pk": null}));

    let theirs = app.post(&mallory, "/variations/upscale", &json!({"id": image_id})).await;
    let nonexistent = app.post(&mallory, "/variations/upscale", &json!({"id": missing})).await;
    assert_eq!(theirs.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        theirs.body["error"].as_str().unwrap().replace(&image_id, "ID"),
        nonexistent.body["error"].as_str().unwrap().replace(&missing.to_string(), "ID")
    );

    let body = json!({"prompt": "steal", "init_generation_image_id": image_id, "init_strength": 0.5});
    let reply = app.post(&mallory, "/generations", &body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // Alice still has everything.
    let reply = app.get(&alice, &format!("/generations/{id}")).await;
    assert_eq!(reply.body["generations_by_pk"]["id"], id);
    let reply = app.get(&mallory, &format!("/generations/user/{}", mallory.id)).await;
    assert_eq!(reply.body, json!({"generations": []}));
}
