//! The REST v1 surface, endpoint by endpoint, over real HTTP.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

fn decode_jpeg(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).expect("a JPEG").to_rgb8()
}

#[tokio::test]
async fn a_generation_completes_with_real_jpegs_of_the_requested_size() {
    let app = spawn_app().await;
    let user = &app.admin;
    let body = json!({"prompt": "An oil painting of a cat", "width": 256, "height": 128, "num_images": 3,
                      "modelId": "6bef9f1b-29cb-40c7-b9df-32b51c1f67d3", "alchemy": true, "presetStyle": "DYNAMIC"});
    let reply = app.post(user, "/generations", &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers["content-type"].to_str().unwrap().starts_with("application/json"));
    let job = &reply.body["sdGenerationJob"];
    assert!(job["apiCreditCost"].is_u64(), "apiCreditCost must be an integer: {job}");
    assert!(job["cost"]["amount"].is_string());
    let id = job["generationId"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());

    let generation = app.finished_generation(user, id).await;
    assert_eq!(generation["status"], "COMPLETE");
    assert_eq!(generation["id"], id);
    assert_eq!(generation["prompt"], "An oil painting of a cat");
    assert_eq!(generation["modelId"], "6bef9f1b-29cb-40c7-b9df-32b51c1f67d3");
    assert_eq!(generation["sdVersion"], "v2");
    assert_eq!((generation["imageWidth"].as_u64(), generation["imageHeight"].as_u64()), (Some(256), Some(128)));
    assert!(generation["seed"].is_u64(), "seed is an integer in REST: {}", generation["seed"]);
    let images = generation["generated_images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    for (index, image) in images.iter().enumerate() {
        assert!(uuid::Uuid::parse_str(image["id"].as_str().unwrap()).is_ok());
        let url = image["url"].as_str().unwrap();
        let user_id = app.admin.id;
        assert!(
            url.starts_with(&format!("{}/cdn/users/{user_id}/generations/{id}/", app.origin)) && url.ends_with(".jpg"),
            "{url}"
        );
        assert!(url.ends_with(&format!("_{index}.jpg")), "{url}");
        let (status, content_type, bytes) = app.download(url).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some("image/jpeg"));
        let picture = decode_jpeg(&bytes);
        assert_eq!((picture.width(), picture.height()), (256, 128));
    }
}

#[tokio::test]
async fn same_request_and_seed_give_the_same_bytes_and_other_prompts_differ() {
    let app = spawn_app().await;
    let user = &app.admin;
    let body =
        |prompt: &str| json!({"prompt": prompt, "width": 128, "height": 128, "num_images": 1, "seed": 905778432});
    let mut files = Vec::new();
    for prompt in ["a red fox", "a red fox", "a lighthouse at night"] {
        let id = app.create_generation(user, &body(prompt)).await;
        let generation = app.finished_generation(user, &id).await;
        assert_eq!(generation["seed"], 905778432);
        let (_, _, bytes) = app.download(generation["generated_images"][0]["url"].as_str().unwrap()).await;
        files.push(bytes);
    }
    assert_eq!(files[0], files[1], "same prompt and seed must give the same bytes");
    assert_ne!(files[0], files[2], "different prompts must give different pictures");
}

#[tokio::test]
async fn a_random_seed_is_chosen_and_recorded_when_none_is_given() {
    let app = spawn_app().await;
    let user = &app.admin;
    let first = app.create_generation(user, &small_generation("seedless")).await;
    let second = app.create_generation(user, &small_generation("seedless")).await;
    let first = app.finished_generation(user, &first).await;
    let second = app.finished_generation(user, &second).await;
    assert!(first["seed"].as_u64().unwrap() <= 9_999_999_998);
    assert_ne!(first["seed"], second["seed"]);
}

#[tokio::test]
async fn unknown_generations_read_and_delete_as_null() {
    let app = spawn_app().await;
    let missing = uuid::Uuid::new_v4();
    let reply = app.get(&app.admin, &format!("/generations/{missing}")).await;
    assert_eq!((reply.status, reply.body.clone()), (StatusCode::OK, json!({"generations_by_pk": null})));
    let reply = app.delete(&app.admin, &format!("/generations/{missing}")).await;
    assert_eq!((reply.status, reply.body), (StatusCode::OK, json!({"delete_generations_by_pk": null})));
}

#[tokio::test]
async fn deleting_a_generation_removes_it_and_its_files() {
    let app = spawn_app().await;
    let user = &app.admin;
    let id = app.create_generation(user, &small_generation("to be deleted")).await;
    let generation = app.finished_generation(user, &id).await;
    let url = generation["generated_images"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(app.download(&url).await.0, StatusCode::OK);

    let reply = app.delete(user, &format!("/generations/{id}")).await;
    assert_eq!((reply.status, reply.body), (StatusCode::OK, json!({"delete_generations_by_pk": {"id": id}})));
    let reply = app.get(user, &format!("/generations/{id}")).await;
    assert_eq!(reply.body, json!({"generations_by_pk": null}));
    let (status, _, body) = app.download(&url).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["code"], "not-found");
}

#[tokio::test]
async fn listing_by_user_pages_newest_first() {
    let app = spawn_app().await;
    let user = &app.admin;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(app.create_generation(user, &small_generation(&format!("picture {n}"))).await);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let page = |offset: u32, limit: u32| format!("/generations/user/{}?offset={offset}&limit={limit}", user.id);
    let reply = app.get(user, &page(0, 2)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let listed: Vec<&str> =
        reply.body["generations"].as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![ids[4].as_str(), ids[3].as_str()]);
    let reply = app.get(user, &page(4, 10)).await;
    let listed: Vec<&str> =
        reply.body["generations"].as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![ids[0].as_str()]);
    // Defaults (limit 10, offset 0) when the query is absent.
    let reply = app.get(user, &format!("/generations/user/{}", user.id)).await;
    assert_eq!(reply.body["generations"].as_array().unwrap().len(), 5);
    for (query, field) in
        [("limit=0", "limit"), ("limit=101", "limit"), ("limit=ten", "limit"), ("offset=-1", "offset")]
    {
        let reply = app.get(user, &format!("/generations/user/{}?{query}", user.id)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(reply.body["error"].as_str().unwrap().contains(&format!("`{field}`")), "{}", reply.text);
    }
}

#[tokio::test]
async fn me_describes_the_caller() {
    let app = spawn_app().await;
    let user = app.new_user_with_slots("painter", 3).await;
    let reply = app.get(&user, "/me").await;
    assert_eq!(reply.status, StatusCode::OK);
    let details = &reply.body["user_details"][0];
    assert_eq!(details["user"]["id"], user.id.to_string());
    assert_eq!(details["user"]["username"], "painter");
    assert_eq!(details["apiConcurrencySlots"], 3);
    for integer in ["subscriptionTokens", "subscriptionGptTokens", "subscriptionModelTokens", "apiSubscriptionTokens"] {
        assert!(details[integer].is_u64(), "{integer} must be an integer");
    }
}

#[tokio::test]
async fn platform_models_include_the_sdk_default_and_the_guide_model() {
    let app = spawn_app_with(|config| {
        config.models.push(easel::models::ModelConfig::new("0f0f0f0f-1111-4222-8333-444444444444", "House Style"))
    })
    .await;
    let reply = app.get(&app.admin, "/platformModels").await;
    assert_eq!(reply.status, StatusCode::OK);
    let models = reply.body["custom_models"].as_array().unwrap();
    let name_of = |id: &str| models.iter().find(|m| m["id"] == id).map(|m| m["name"].clone());
    assert!(name_of("b24e16ff-06e3-43eb-8d33-4416c2d75876").is_some());
    assert_eq!(name_of("6bef9f1b-29cb-40c7-b9df-32b51c1f67d3"), Some(json!("Leonardo Creative")));
    assert_eq!(name_of("0f0f0f0f-1111-4222-8333-444444444444"), Some(json!("House Style")));
    for model in models {
        assert!(model["description"].is_string() && model["nsfw"].is_boolean() && model["featured"].is_boolean());
    }
    // A configured model can be generated with.
    let id = app
        .create_generation(
            &app.admin,
            &json!({"prompt": "p", "width": 64, "height": 64, "num_images": 1,
                                                  "modelId": "0f0f0f0f-1111-4222-8333-444444444444"}),
        )
        .await;
    let generation = app.finished_generation(&app.admin, &id).await;
    assert_eq!(generation["status"], "COMPLETE");
    assert!(generation["generated_images"][0]["url"].as_str().unwrap().contains("House_Style_p_0.jpg"));
}

#[tokio::test]
async fn upscale_makes_a_real_2x_image_tracked_as_a_variation() {
    let app = spawn_app().await;
    let user = &app.admin;
    let id =
        app.create_generation(user, &json!({"prompt": "a castle", "width": 96, "height": 64, "num_images": 1})).await;
    let generation = app.finished_generation(user, &id).await;
    let image_id = generation["generated_images"][0]["id"].as_str().unwrap().to_string();

    let reply = app.post(user, "/variations/upscale", &json!({"id": image_id})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(reply.body["sdUpscaleJob"]["apiCreditCost"].is_u64());
    let variation_id = reply.body["sdUpscaleJob"]["id"].as_str().unwrap().to_string();

    let variation = eventually(Duration::from_secs(30), || async {
        let reply = app.get(user, &format!("/variations/{variation_id}")).await;
        let variation = reply.body["generated_image_variation_generic"][0].clone();
        (variation["status"] == "COMPLETE").then_some(variation)
    })
    .await;
    assert_eq!(variation["id"], variation_id);
    assert_eq!(variation["transformType"], "UPSCALE");
    assert!(variation["createdAt"].is_string());
    let (status, content_type, bytes) = app.download(variation["url"].as_str().unwrap()).await;
    assert_eq!((status, content_type.as_deref()), (StatusCode::OK, Some("image/jpeg")));
    let picture = decode_jpeg(&bytes);
    assert_eq!((picture.width(), picture.height()), (192, 128));

    // The generation lists the variation under its image.
    let reply = app.get(user, &format!("/generations/{id}")).await;
    let variations = &reply.body["generations_by_pk"]["generated_images"][0]["generated_image_variation_generics"];
    assert_eq!(variations[0]["id"], variation_id);
    assert_eq!(variations[0]["status"], "COMPLETE");
    // The SDKs' shape of a variation under its image has no `createdAt` (their parsers drop it).
    assert_eq!(variations[0].as_object().unwrap().keys().collect::<Vec<_>>(), ["id", "status", "transformType", "url"]);

    // Unknown variations read as an empty list.
    let reply = app.get(user, &format!("/variations/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(reply.body, json!({"generated_image_variation_generic": []}));
}

/// Finished generations are answered from memory on SQLite; every change reaches the next read.
#[tokio::test]
async fn a_finished_generation_read_again_shows_its_new_variations_and_its_deletion() {
    let app = spawn_app().await;
    let user = &app.admin;
    let id =
        app.create_generation(user, &json!({"prompt": "a mill", "width": 64, "height": 64, "num_images": 1})).await;
    let generation = app.finished_generation(user, &id).await;
    let image_id = generation["generated_images"][0]["id"].as_str().unwrap().to_string();
    for _ in 0..3 {
        let reply = app.get(user, &format!("/generations/{id}")).await;
        assert_eq!(reply.body["generations_by_pk"], generation);
    }
    // Another user never reads it, remembered or not.
    let other = app.new_user("neighbour").await;
    assert_eq!(app.get(&other, &format!("/generations/{id}")).await.body, json!({"generations_by_pk": null}));

    let reply = app.post(user, "/variations/upscale", &json!({"id": image_id})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let variation_id = reply.body["sdUpscaleJob"]["id"].as_str().unwrap().to_string();
    let reply = app.get(user, &format!("/generations/{id}")).await;
    let variations = &reply.body["generations_by_pk"]["generated_images"][0]["generated_image_variation_generics"];
    assert_eq!(variations[0]["id"], variation_id, "{}", reply.text);
    eventually(Duration::from_secs(30), || async {
        let reply = app.get(user, &format!("/generations/{id}")).await;
        let variation =
            &reply.body["generations_by_pk"]["generated_images"][0]["generated_image_variation_generics"][0];
        (variation["status"] == "COMPLETE").then_some(())
    })
    .await;

    assert_eq!(app.delete(user, &format!("/generations/{id}")).await.status, StatusCode::OK);
    assert_eq!(app.get(user, &format!("/generations/{id}")).await.body, json!({"generations_by_pk": null}));
}

#[tokio::test]
async fn upscale_requires_an_image_id() {
    let app = spawn_app().await;
    let user = &app.admin;
    // The Python SDK sends no body at all when the request is omitted.
    let reply = app.send(app.client.post(app.api("/variations/upscale")).bearer_auth(&user.key)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body["error"].as_str().unwrap().contains("`id`"), "{}", reply.text);
    let reply = app.post(user, "/variations/upscale", &json!({"id": uuid::Uuid::new_v4()})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body["error"].as_str().unwrap().contains("no image"), "{}", reply.text);
    let reply = app.post(user, "/variations/upscale", &json!({"id": 7})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn image_to_image_starts_from_an_earlier_image() {
    let app = spawn_app().await;
    let user = &app.admin;
    let base = app
        .create_generation(user, &json!({"prompt": "a tree", "width": 64, "height": 64, "num_images": 1, "seed": 1}))
        .await;
    let base = app.finished_generation(user, &base).await;
    let image_id = base["generated_images"][0]["id"].as_str().unwrap();
    let body = |strength: f64| {
        json!({"prompt": "a house", "width": 64, "height": 64, "num_images": 1, "seed": 2,
                                      "init_generation_image_id": image_id, "init_strength": strength})
    };
    let strong = app.create_generation(user, &body(0.9)).await;
    let weak = app.create_generation(user, &body(0.1)).await;
    let plain = app
        .create_generation(user, &json!({"prompt": "a house", "width": 64, "height": 64, "num_images": 1, "seed": 2}))
        .await;
    let mut pictures = Vec::new();
    for (id, strength) in [(&strong, json!(0.9)), (&weak, json!(0.1)), (&plain, json!(null))] {
        let generation = app.finished_generation(user, id).await;
        assert_eq!(generation["status"], "COMPLETE");
        assert_eq!(generation["initStrength"], strength);
        let (_, _, bytes) = app.download(generation["generated_images"][0]["url"].as_str().unwrap()).await;
        pictures.push(decode_jpeg(&bytes));
    }
    let (_, _, base_bytes) = app.download(base["generated_images"][0]["url"].as_str().unwrap()).await;
    let base_picture = decode_jpeg(&base_bytes);
    let distance = |a: &image::RgbImage, b: &image::RgbImage| -> u64 {
        a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum()
    };
    assert!(distance(&pictures[0], &base_picture) < distance(&pictures[1], &base_picture));
    assert!(distance(&pictures[1], &base_picture) < distance(&pictures[2], &base_picture));

    let reply = app
        .post(
            user,
            "/generations",
            &json!({"prompt": "x", "init_generation_image_id": uuid::Uuid::new_v4(), "init_strength": 0.5}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body["error"].as_str().unwrap().contains("init_generation_image_id"));
}

#[tokio::test]
async fn health_answers_without_authentication() {
    let app = spawn_app().await;
    let expected = match crate::BACKEND {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(app.easel.store.backend(), expected, "the suite runs on its backend");
    let reply = app.send(app.client.get(format!("{}/healthz", app.origin))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "ok");
}

#[tokio::test]
async fn sdk_headers_including_an_empty_cookie_are_accepted() {
    let app = spawn_app().await;
    let reply = app
        .send(
            app.client
                .get(app.api("/me"))
                .header("authorization", format!("bearer {}", app.admin.key))
                .header("cookie", "")
                .header("accept-language", "*")
                .header("sec-fetch-mode", "cors")
                .header("user-agent", "speakeasy-sdk/typescript 4.21.3 2.881.4 v1.0.0 @leonardo-ai/sdk"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

#[tokio::test]
async fn operations_not_served_say_so_by_name_after_authentication() {
    let app = spawn_app().await;
    let cases = [
        ("POST", "/generations-text-to-video", "createTextToVideoGeneration"),
        ("POST", "/generations-motion-svd", "createSVDMotionGeneration"),
        ("POST", "/elements", "createElement"),
        ("DELETE", "/elements/3f1c0a52-0000-4000-8000-000000000001", "deleteElementById"),
        ("DELETE", "/models/3f1c0a52-0000-4000-8000-000000000001", "deleteModelById"),
        ("POST", "/models", "createModel"),
        ("GET", "/blueprints", "listBlueprints"),
    ];
    for (method, path, operation) in cases {
        let request = |key: Option<&str>| {
            let builder = app.client.request(method.parse().unwrap(), app.api(path)).json(&json!({}));
            match key {
                Some(key) => builder.bearer_auth(key),
                None => builder,
            }
        };
        let anonymous = app.send(request(None)).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        let reply = app.send(request(Some(&app.admin.key))).await;
        assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED, "{method} {path}: {}", reply.text);
        assert_eq!(reply.body["code"], "not-supported");
        let message = reply.body["error"].as_str().unwrap();
        assert!(
            message.starts_with(&format!(
                "{operation} ({method} {path_pattern}) is not supported by this server",
                path_pattern = easel_pattern(path)
            )),
            "{message}"
        );
    }
    // What is served is untouched: GET /variations/{id} beside unserved paths.
    let reply = app.get(&app.admin, "/variations/3f1c0a52-0000-4000-8000-000000000001").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

/// The route pattern of a concrete test path (ids back to `{id}`).
fn easel_pattern(path: &str) -> String {
    path.replace("3f1c0a52-0000-4000-8000-000000000001", "{id}")
}

#[tokio::test]
async fn the_pricing_calculator_prices_generations_as_they_are_charged() {
    let app = spawn_app().await;
    let user = &app.admin;
    for (width, height, count) in [(512, 512, 2), (1024, 768, 4), (1536, 1536, 1), (64, 64, 8)] {
        let priced = app
            .post(
                user,
                "/pricing-calculator",
                &json!({"service": "IMAGE_GENERATION",
                        "serviceParams": {"IMAGE_GENERATION": {"imageWidth": width, "imageHeight": height, "numImages": count}}}),
            )
            .await;
        assert_eq!(priced.status, StatusCode::OK, "{}", priced.text);
        let created = app
            .post(
                user,
                "/generations",
                &json!({"prompt": "priced", "width": width, "height": height, "num_images": count}),
            )
            .await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.text);
        assert_eq!(
            priced.body["calculateProductionApiServiceCost"]["cost"], created.body["sdGenerationJob"]["apiCreditCost"],
            "{width}x{height}x{count}"
        );
    }
    let bad = app
        .post(user, "/pricing-calculator", &json!({"serviceParams": {"IMAGE_GENERATION": {"imageWidth": 33}}}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text.contains("`serviceParams.IMAGE_GENERATION.imageWidth` must be"), "{}", bad.text);
    let video = app.post(user, "/pricing-calculator", &json!({"service": "MOTION_VIDEO_GENERATION"})).await;
    assert_eq!(video.status, StatusCode::BAD_REQUEST);
    assert!(
        video.text.contains("MOTION_VIDEO_GENERATION")
            && video.text.contains("IMAGE_GENERATION, UNIVERSAL_UPSCALER, UNIVERSAL_UPSCALER_ULTRA"),
        "{}",
        video.text
    );
    let anonymous = app.send(app.client.post(app.api("/pricing-calculator")).json(&json!({}))).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_model_is_looked_up_by_id() {
    let app = spawn_app().await;
    let reply = app.get(&app.admin, "/models/6bef9f1b-29cb-40c7-b9df-32b51c1f67d3").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let model = &reply.body["custom_models_by_pk"];
    assert_eq!(model["name"], "Leonardo Creative");
    assert_eq!(model["sdVersion"], "v2");
    assert_eq!((model["modelWidth"].as_u64(), model["modelHeight"].as_u64()), (Some(768), Some(768)));
    assert_eq!(model["status"], "COMPLETE");
    assert_eq!(model["createdAt"], "2023-01-06T01:02:38.315Z");
    let unknown = app.get(&app.admin, "/models/3f1c0a52-0000-4000-8000-000000000001").await;
    assert_eq!(unknown.status, StatusCode::OK);
    assert_eq!(unknown.body, json!({"custom_models_by_pk": null}));
    let bad = app.get(&app.admin, "/models/not-a-uuid").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn elements_come_from_the_configuration_and_user_lists_are_empty() {
    let app = spawn_app_with(|config| {
        let element: easel::models::ElementConfig = serde_json::from_value(json!({
            "id": "9F0D2C1E-5B7A-4E3C-8D21-6A4B3C2D1E0F", "name": "Watercolour wash",
            "description": "soft pigment blooms", "base_model": "SDXL_1_0", "lora": "watercolor_v2",
            "weight_min": 0, "weight_default": 1, "weight_max": 2, "creator": "Studio"
        }))
        .unwrap();
        config.elements.push(element);
    })
    .await;
    let user = &app.admin;
    let listed = app.get(user, "/elements").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(
        listed.body,
        json!({"loras": [{"akUUID": "9f0d2c1e-5b7a-4e3c-8d21-6a4b3c2d1e0f", "name": "Watercolour wash",
                          "description": "soft pigment blooms", "baseModel": "SDXL_1_0", "creatorName": "Studio",
                          "urlImage": null, "weightDefault": 1, "weightMin": 0, "weightMax": 2}]})
    );
    assert_eq!(app.get(user, "/elements/17").await.body, json!({"user_loras_by_pk": null}));
    let bad = app.get(user, "/elements/not-a-number").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text.contains("`id` must be an element id"), "{}", bad.text);
    let mine = format!("/elements/user/{}", user.id);
    assert_eq!(app.get(user, &mine).await.body, json!({"user_loras": []}));
    let models = app.get(user, &format!("/models/user/{}", user.id)).await;
    assert_eq!(models.body, json!({"custom_models": []}), "{}", models.text);
    assert_eq!(app.get(user, "/models/user/nobody").await.status, StatusCode::BAD_REQUEST);
    let anonymous = app.send(app.client.get(app.api("/elements"))).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // A bad element stops start-up with a line naming it.
    let mut config = app.config.clone();
    config.elements[0].base_model = "SDXL_9".into();
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("`elements[0].base_model`") && error.contains("SDXL_9"), "{error}");
    config.elements[0].base_model = "SDXL_1_0".into();
    config.elements[0].weight_default = 5;
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("`elements[0].weight_default`"), "{error}");
}
