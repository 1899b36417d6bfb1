//! Variations beyond the 2x upscale: background removal, unzoom and the universal upscaler, on
//! generated images and on earlier variations' results; their validation, slots and pricing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// A complete generation's first image id.
async fn generated_image(app: &TestApp, user: &TestUser, prompt: &str, width: u32, height: u32) -> String {
    let body = json!({"prompt": prompt, "width": width, "height": height, "num_images": 1});
    let id = app.create_generation(user, &body).await;
    let generation = app.finished_generation(user, &id).await;
    assert_eq!(generation["status"], "COMPLETE", "{generation}");
    generation["generated_images"][0]["id"].as_str().unwrap().to_string()
}

/// Posts a variation request, expects `job_key` in the answer and waits for it to complete.
async fn finished_variation(app: &TestApp, user: &TestUser, path: &str, body: Value, job_key: &str) -> (Value, Value) {
    let reply = app.post(user, path, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let job = reply.body[job_key].clone();
    assert!(job["id"].is_string(), "{} has no {job_key}", reply.text);
    assert_eq!(job["cost"]["amount"], job["apiCreditCost"].to_string(), "{}", reply.text);
    let id = job["id"].as_str().unwrap().to_string();
    let variation = eventually(Duration::from_secs(30), || async {
        let reply = app.get(user, &format!("/variations/{id}")).await;
        let variation = reply.body["generated_image_variation_generic"][0].clone();
        (variation["status"] != "PENDING" && !variation.is_null()).then_some(variation)
    })
    .await;
    assert_eq!(variation["status"], "COMPLETE", "{variation}");
    (job, variation)
}

async fn picture(app: &TestApp, variation: &Value, content_type: &str) -> image::DynamicImage {
    let (status, served_as, bytes) = app.download(variation["url"].as_str().unwrap()).await;
    assert_eq!((status, served_as.as_deref()), (StatusCode::OK, Some(content_type)));
    image::load_from_memory(&bytes).unwrap()
}

#[tokio::test]
async fn background_removal_makes_a_transparent_png_and_unzoom_takes_it_further() {
    let app = spawn_app().await;
    let user = &app.admin;
    let image = generated_image(&app, user, "a lighthouse on a cliff at dusk", 128, 96).await;

    let (job, nobg) = finished_variation(&app, user, "/variations/nobg", json!({"id": image}), "sdNobgJob").await;
    assert_eq!(job["apiCreditCost"], 1);
    assert_eq!(nobg["transformType"], "NOBG");
    assert!(nobg["url"].as_str().unwrap().ends_with(".png"), "{nobg}");
    let cutout = picture(&app, &nobg, "image/png").await.to_rgba8();
    assert_eq!(cutout.dimensions(), (128, 96));
    let transparent = cutout.pixels().filter(|p| p[3] == 0).count();
    let opaque = cutout.pixels().filter(|p| p[3] == 255).count();
    let all = 128 * 96;
    assert!(transparent > all / 20 && opaque > all / 20, "{transparent} transparent, {opaque} opaque of {all}");

    // `isVariation`: unzoom the cut-out itself.
    let body = json!({"id": nobg["id"], "isVariation": true});
    let (job, unzoomed) = finished_variation(&app, user, "/variations/unzoom", body, "sdUnzoomJob").await;
    assert_eq!(job["apiCreditCost"], 1);
    assert_eq!(unzoomed["transformType"], "UNZOOM");
    assert_eq!(picture(&app, &unzoomed, "image/jpeg").await.to_rgb8().dimensions(), (128, 96));

    // Both are listed under the generated image.
    let listed = app.get(user, &format!("/variations/{}", unzoomed["id"].as_str().unwrap())).await;
    assert_eq!(listed.body["generated_image_variation_generic"][0]["id"], unzoomed["id"]);
}

#[tokio::test]
async fn the_universal_upscaler_scales_by_its_multiplier_and_prices_like_the_calculator() {
    let app = spawn_app().await;
    let user = &app.admin;
    let image = generated_image(&app, user, "a field of sunflowers", 512, 512).await;

    let body = json!({"generatedImageId": image, "upscaleMultiplier": 1.25, "upscalerStyle": "CINEMATIC",
                      "creativityStrength": 3, "detailContrast": 7, "similarity": 8, "prompt": "sharper petals"});
    let (job, upscaled) =
        finished_variation(&app, user, "/variations/universal-upscaler", body, "universalUpscaler").await;
    assert_eq!(upscaled["transformType"], "UPSCALE");
    assert_eq!(picture(&app, &upscaled, "image/jpeg").await.to_rgb8().dimensions(), (640, 640));
    // 640 x 640 = 0.41 megapixels: one credit, as the calculator says for the same input.
    let priced = app
        .post(
            user,
            "/pricing-calculator",
            &json!({"service": "UNIVERSAL_UPSCALER_ULTRA",
                    "serviceParams": {"UNIVERSAL_UPSCALER_ULTRA":
                        {"inputWidth": 512, "inputHeight": 512, "upscaleMultiplier": 1.25}}}),
        )
        .await;
    assert_eq!(priced.status, StatusCode::OK, "{}", priced.text);
    assert_eq!(priced.body["calculateProductionApiServiceCost"]["cost"], job["apiCreditCost"]);

    // From a variation: the 2x upscale (1024 x 1024), then 2x again (2048 x 2048 = 4.2 MP).
    let (_, doubled) =
        finished_variation(&app, user, "/variations/upscale", json!({"id": image}), "sdUpscaleJob").await;
    let body = json!({"variationId": doubled["id"], "upscaleMultiplier": 2, "ultraUpscaleStyle": "REALISTIC"});
    let (job, twice) =
        finished_variation(&app, user, "/variations/universal-upscaler", body, "universalUpscaler").await;
    assert_eq!(picture(&app, &twice, "image/jpeg").await.to_rgb8().dimensions(), (2048, 2048));
    assert_eq!(job["apiCreditCost"], 5);
    let priced = app
        .post(
            user,
            "/pricing-calculator",
            &json!({"service": "UNIVERSAL_UPSCALER", "serviceParams": {"UNIVERSAL_UPSCALER": {"megapixel": 5}}}),
        )
        .await;
    assert_eq!(priced.body["calculateProductionApiServiceCost"]["cost"], 5, "{}", priced.text);

    // Listed under their image, universal upscales are UPSCALE too: the SDKs' VariationType has
    // no other name for them (the TypeScript SDK rejects the whole generation on an unknown one).
    let listed = app.get(user, &format!("/generations/user/{}", user.id)).await;
    let variations = &listed.body["generations"][0]["generated_images"][0]["generated_image_variation_generics"];
    let types: Vec<_> = variations.as_array().unwrap().iter().map(|v| v["transformType"].as_str()).collect();
    assert_eq!(types, [Some("UPSCALE"); 3], "{}", listed.text);
}

#[tokio::test]
async fn variation_requests_are_validated_field_by_field() {
    let app = spawn_app().await;
    let user = &app.admin;
    let image = generated_image(&app, user, "a quiet harbour", 64, 64).await;
    let other = app.new_user("other").await;
    let missing = uuid::Uuid::new_v4();
    let cases = [
        ("/variations/nobg", json!({}), "id", "required"),
        ("/variations/nobg", json!({"id": "not-a-uuid"}), "id", "UUID"),
        ("/variations/unzoom", json!({"id": missing}), "id", "no image"),
        ("/variations/unzoom", json!({"id": image, "isVariation": true}), "id", "no variation"),
        ("/variations/nobg", json!({"id": image, "isVariation": "yes"}), "isVariation", "boolean"),
        ("/variations/universal-upscaler", json!({}), "generatedImageId", "one of"),
        (
            "/variations/universal-upscaler",
            json!({"generatedImageId": image, "variationId": missing}),
            "variationId",
            "not both",
        ),
        (
            "/variations/universal-upscaler",
            json!({"generatedImageId": image, "upscaleMultiplier": 3}),
            "upscaleMultiplier",
            "between 1 and 2",
        ),
        (
            "/variations/universal-upscaler",
            json!({"generatedImageId": image, "creativityStrength": 11}),
            "creativityStrength",
            "between 1 and 10",
        ),
        (
            "/variations/universal-upscaler",
            json!({"generatedImageId": image, "upscalerStyle": "PASTEL"}),
            "upscalerStyle",
            "CINEMATIC",
        ),
        (
            "/variations/universal-upscaler",
            json!({"generatedImageId": image, "upscalerStyle": "GENERAL", "ultraUpscaleStyle": "ARTISTIC"}),
            "ultraUpscaleStyle",
            "cannot be used together",
        ),
        ("/variations/universal-upscaler", json!({"initImageId": missing}), "initImageId", "init images"),
    ];
    for (path, body, field, words) in cases {
        let reply = app.post(user, path, &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path} {body}: {}", reply.text);
        let error = reply.body["error"].as_str().unwrap();
        assert!(error.contains(&format!("`{field}`")) && error.contains(words), "{path} {body}: {error}");
    }
    // Another user's image reads as missing.
    let reply = app.post(&other, "/variations/nobg", &json!({"id": image})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body["error"].as_str().unwrap().contains("no image"), "{}", reply.text);
}

#[tokio::test]
async fn every_kind_of_variation_takes_a_slot_and_a_pending_one_cannot_be_a_source() {
    let app = spawn_app().await;
    let user = app.new_user_with_slots("busy", 1).await;
    let image = generated_image(&app, &user, "a red kite", 64, 64).await;
    // Restarted with rendering that never finishes: the first job holds the only slot.
    let (dir, mut config) = app.stop().await;
    config.render.simulated_duration = Duration::from_secs(3600);
    let app = start_in(dir, config).await;
    let reply = app.post(&user, "/variations/nobg", &json!({"id": image})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let pending = reply.body["sdNobgJob"]["id"].clone();
    let requests = [
        ("/variations/nobg", json!({"id": image})),
        ("/variations/unzoom", json!({"id": image})),
        ("/variations/upscale", json!({"id": image})),
        ("/variations/universal-upscaler", json!({"generatedImageId": image})),
    ];
    for (path, body) in requests {
        let reply = app.post(&user, path, &body).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{path}: {}", reply.text);
        assert_eq!(reply.body["code"], "concurrency-limit");
    }
    let reply = app.post(&user, "/variations/unzoom", &json!({"id": pending, "isVariation": true})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.body["error"].as_str().unwrap().contains("PENDING, not COMPLETE"), "{}", reply.text);
}
