//! Init image uploads: presigned policies, the upload itself (to Easel's own target with local
//! storage, straight to the bucket with S3), image-to-image from an upload, and every way an
//! upload or its use is refused.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// A `width` x `height` picture of one colour, encoded as `format`.
pub fn picture(width: u32, height: u32, rgb: [u8; 3], format: image::ImageFormat) -> Vec<u8> {
    let picture = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
    let mut bytes = std::io::Cursor::new(Vec::new());
    picture.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// `POST /init-image`: the upload's id, URL and fields (decoded from their JSON string).
pub async fn new_upload(app: &TestApp, user: &TestUser, extension: &str) -> (String, String, BTreeMap<String, String>) {
    let reply = app.post(user, "/init-image", &json!({"extension": extension})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let upload = &reply.body["uploadInitImage"];
    let fields: BTreeMap<String, String> = serde_json::from_str(upload["fields"].as_str().unwrap()).unwrap();
    assert_eq!(upload["key"].as_str().unwrap(), fields["key"]);
    (upload["id"].as_str().unwrap().to_string(), upload["url"].as_str().unwrap().to_string(), fields)
}

/// POSTs `file` with `fields` to `url` as a browser or the SDK examples do: multipart, no key.
pub async fn upload(url: &str, fields: &BTreeMap<String, String>, file: Vec<u8>) -> (StatusCode, String) {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in fields {
        form = form.text(name.clone(), value.clone());
    }
    form = form.part("file", reqwest::multipart::Part::bytes(file).file_name("picture"));
    let response = reqwest::Client::new().post(url).multipart(form).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn an_uploaded_init_image_starts_an_image_to_image_generation() {
    let app = spawn_app().await;
    let user = &app.admin;
    let (id, url, fields) = new_upload(&app, user, "png").await;
    assert_eq!(url, format!("{}/uploads/{id}", app.origin));
    let names: Vec<&str> = fields.keys().map(String::as_str).collect();
    assert_eq!(names, ["Content-Type", "key", "policy", "x-easel-signature"]);
    assert_eq!(fields["Content-Type"], "image/png");

    let red = picture(64, 64, [220, 20, 20], image::ImageFormat::Png);
    assert_eq!(upload(&url, &fields, red.clone()).await, (StatusCode::NO_CONTENT, String::new()));
    // One upload per policy.
    let (status, body) = upload(&url, &fields, red.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("already used") && body.contains("upload-refused"), "{body}");

    let found = app.get(user, &format!("/init-image/{id}")).await;
    let image = &found.body["init_images_by_pk"];
    assert_eq!(image["id"], id.as_str(), "{}", found.text);
    assert!(image["createdAt"].is_string());
    let (status, content_type, bytes) = app.download(image["url"].as_str().unwrap()).await;
    assert_eq!((status, content_type.as_deref(), bytes), (StatusCode::OK, Some("image/png"), red));

    // Image-to-image: kept at 0.9, the result is mostly the red upload.
    let body = json!({"prompt": "a blue sky over green hills", "width": 64, "height": 64, "num_images": 1,
                      "init_image_id": id, "init_strength": 0.9});
    let generation = app.create_generation(user, &body).await;
    let generation = app.finished_generation(user, &generation).await;
    assert_eq!(generation["status"], "COMPLETE", "{generation}");
    let (_, _, jpeg) = app.download(generation["generated_images"][0]["url"].as_str().unwrap()).await;
    let result = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    let mean = |c: usize| result.pixels().map(|p| f64::from(p[c])).sum::<f64>() / 4096.0;
    assert!(mean(0) > 170.0 && mean(1) < 80.0 && mean(2) < 80.0, "mean colour {} {} {}", mean(0), mean(1), mean(2));

    // Deleted: gone, the file too, and generations can no longer use it.
    let deleted = app.delete(user, &format!("/init-image/{id}")).await;
    assert_eq!(deleted.body, json!({"delete_init_images_by_pk": {"id": id}}));
    assert_eq!(app.get(user, &format!("/init-image/{id}")).await.body, json!({"init_images_by_pk": null}));
    assert_eq!(app.delete(user, &format!("/init-image/{id}")).await.body, json!({"delete_init_images_by_pk": null}));
    assert_eq!(app.download(image["url"].as_str().unwrap()).await.0, StatusCode::NOT_FOUND);
    let reply = app.post(user, "/generations", &body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text.contains("no init image"), "{}", reply.text);
}

#[tokio::test]
async fn uploads_outside_their_policy_are_refused_cleanly() {
    let app = spawn_app_with(|config| config.api.max_upload_bytes = 4096).await;
    let user = &app.admin;
    let small = picture(16, 16, [10, 200, 10], image::ImageFormat::Png);

    // A changed key (another object), a missing signature, a forged one.
    let (_, url, fields) = new_upload(&app, user, "png").await;
    let mut moved = fields.clone();
    moved.insert("key".into(), format!("users/{}/init-images/elsewhere.png", app.admin.id));
    let (status, body) = upload(&url, &moved, small.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("`key`"), "{body}");
    let mut unsigned = fields.clone();
    unsigned.remove("x-easel-signature");
    assert_eq!(upload(&url, &unsigned, small.clone()).await.0, StatusCode::FORBIDDEN);
    let mut forged = fields.clone();
    forged.insert("policy".into(), "eyJleHBpcmF0aW9uIjoiMjA5OS0wMS0wMVQwMDowMDowMFoiLCJjb25kaXRpb25zIjpbXX0=".into());
    let (status, body) = upload(&url, &forged, small.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("not signed by this server"), "{body}");
    // Another policy's URL with these fields.
    let (_, other_url, _) = new_upload(&app, user, "png").await;
    assert_eq!(upload(&other_url, &fields, small.clone()).await.0, StatusCode::FORBIDDEN);

    // Too large, and not a picture of the declared type: refused without using the policy.
    let noise: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let (status, body) = upload(&url, &fields, noise).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("5000 bytes") && body.contains("1 to 4096"), "{body}");
    let (status, body) = upload(&url, &fields, b"GIF89a not really".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("not a png picture"), "{body}");
    let jpeg = picture(16, 16, [10, 200, 10], image::ImageFormat::Jpeg);
    assert_eq!(upload(&url, &fields, jpeg).await.0, StatusCode::BAD_REQUEST);
    // The policy still takes the right file.
    assert_eq!(upload(&url, &fields, small.clone()).await.0, StatusCode::NO_CONTENT);

    // No such policy; a body that is not multipart.
    let missing = format!("{}/uploads/{}", app.origin, uuid::Uuid::new_v4());
    assert_eq!(upload(&missing, &fields, small.clone()).await.0, StatusCode::FORBIDDEN);
    let plain = app.client.post(&url).body("hello").send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST);
    // In the error shape, like every answer (it was axum's plain text; found by schemathesis).
    assert_eq!(plain.headers()["content-type"], "application/json");
    let error: serde_json::Value = plain.json().await.unwrap();
    assert_eq!(error["code"], "parse-failed", "{error}");
    assert!(error["error"].as_str().unwrap().contains("must be multipart/form-data"), "{error}");

    // Requests for a policy are validated.
    for (body, words) in [
        (json!({}), "`extension` is required"),
        (json!({"extension": "gif"}), "`extension` must be one of png, jpg, jpeg, webp"),
        (json!({"extension": 5}), "`extension` must be a string"),
    ] {
        let reply = app.post(user, "/init-image", &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(reply.text.contains(words), "{body}: {}", reply.text);
    }
}

#[tokio::test]
async fn expired_unused_and_foreign_init_images_cannot_start_a_generation() {
    // Long enough for the first generation to come before the policy expires, on a loaded machine.
    let expiry = Duration::from_secs(3);
    let app = spawn_app_with(|config| config.api.upload_expiry = expiry).await;
    let user = &app.admin;
    let asked = std::time::Instant::now();
    let (id, url, fields) = new_upload(&app, user, "jpg").await;
    let generation = json!({"prompt": "p", "width": 64, "height": 64, "init_image_id": id});
    let reply = app.post(user, "/generations", &generation).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text.contains("has not been uploaded: upload the file"), "{}", reply.text);

    tokio::time::sleep((expiry + Duration::from_millis(300)).saturating_sub(asked.elapsed())).await;
    let jpeg = picture(16, 16, [1, 2, 3], image::ImageFormat::Jpeg);
    let (status, body) = upload(&url, &fields, jpeg.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("expired"), "{body}");
    let reply = app.post(user, "/generations", &generation).await;
    assert!(reply.text.contains("its upload policy expired at"), "{}", reply.text);

    // Another user's upload reads as missing everywhere.
    let other = app.new_user("other").await;
    let (theirs, their_url, their_fields) = new_upload(&app, &other, "jpg").await;
    assert_eq!(upload(&their_url, &their_fields, jpeg).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.get(user, &format!("/init-image/{theirs}")).await.body, json!({"init_images_by_pk": null}));
    assert_eq!(
        app.delete(user, &format!("/init-image/{theirs}")).await.body,
        json!({"delete_init_images_by_pk": null})
    );
    let reply = app.post(user, "/generations", &json!({"prompt": "p", "init_image_id": theirs})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text.contains(&format!("there is no init image {theirs} of yours")), "{}", reply.text);
    let both = json!({"prompt": "p", "init_image_id": theirs, "init_generation_image_id": theirs});
    assert!(app.post(user, "/generations", &both).await.text.contains("not both"));
}

#[tokio::test]
async fn canvas_uploads_come_in_pairs() {
    let app = spawn_app().await;
    let user = &app.admin;
    let reply = app.post(user, "/canvas-init-image", &json!({"initExtension": "png", "maskExtension": "jpg"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let pair = &reply.body["uploadCanvasInitImage"];
    for (side, extension, format) in
        [("init", "png", image::ImageFormat::Png), ("mask", "jpg", image::ImageFormat::Jpeg)]
    {
        let fields: BTreeMap<String, String> =
            serde_json::from_str(pair[format!("{side}Fields")].as_str().unwrap()).unwrap();
        assert!(fields["key"].ends_with(&format!(".{extension}")), "{fields:?}");
        assert_eq!(pair[format!("{side}Key")].as_str().unwrap(), fields["key"]);
        let url = pair[format!("{side}Url")].as_str().unwrap();
        let file = picture(32, 32, [200, 200, 200], format);
        assert_eq!(upload(url, &fields, file).await.0, StatusCode::NO_CONTENT);
    }
    assert!(pair["initImageId"].is_string() && pair["maskImageId"].is_string(), "{pair}");
    let reply = app.post(user, "/canvas-init-image", &json!({"initExtension": "png"})).await;
    assert!(reply.text.contains("`maskExtension` is required"), "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_s3_storage_the_upload_goes_straight_to_the_bucket() {
    let Some(s3) = crate::storage::s3_server("with_s3_storage_the_upload_goes_straight_to_the_bucket").await else {
        return;
    };
    let client = reqwest::Client::new();
    assert!(client.put(format!("{}/easel-uploads", s3.endpoint)).send().await.unwrap().status().is_success());
    let app = spawn_app_with(|config| {
        s3.use_bucket(config, "s3://easel-uploads/prod");
    })
    .await;
    let user = &app.admin;
    let (id, url, fields) = new_upload(&app, user, "webp").await;
    assert_eq!(url, format!("{}/easel-uploads", s3.endpoint));
    assert_eq!(fields["x-amz-algorithm"], "AWS4-HMAC-SHA256");
    assert!(fields["key"].starts_with(&format!("prod/users/{}/init-images/{id}", user.id)), "{fields:?}");
    // Easel does not receive uploads itself here.
    let local = app.client.post(format!("{}/uploads/{id}", app.origin)).send().await.unwrap();
    assert_eq!(local.status(), StatusCode::NOT_FOUND);

    let mut webp = std::io::Cursor::new(Vec::new());
    image::RgbaImage::from_pixel(64, 64, image::Rgba([20, 20, 230, 255]))
        .write_to(&mut webp, image::ImageFormat::WebP)
        .unwrap();
    let (status, body) = upload(&url, &fields, webp.into_inner()).await;
    assert!(status.is_success(), "the bucket refused the upload: {status} {body}");

    let body =
        json!({"prompt": "p", "width": 64, "height": 64, "num_images": 1, "init_image_id": id, "init_strength": 0.9});
    let generation = app.create_generation(user, &body).await;
    let generation = app.finished_generation(user, &generation).await;
    assert_eq!(generation["status"], "COMPLETE", "{generation}");
    let (_, _, jpeg) = app.download(generation["generated_images"][0]["url"].as_str().unwrap()).await;
    let result = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    let blue = result.pixels().map(|p| f64::from(p[2])).sum::<f64>() / 4096.0;
    assert!(blue > 170.0, "mean blue {blue}");

    // A policy whose file never reached the bucket fails the generation with that reason.
    let (never, _, _) = new_upload(&app, user, "png").await;
    let generation = app.create_generation(user, &json!({"prompt": "p", "init_image_id": never})).await;
    let generation = app.finished_generation(user, &generation).await;
    assert_eq!(generation["status"], "FAILED");
    let reason = generation["failureReason"].as_str().unwrap_or_default();
    assert!(reason.contains(&format!("init image {never} was never uploaded")), "{generation}");
}

/// Uploads `file` through a fresh `POST /init-image` policy; its id.
pub async fn uploaded(app: &TestApp, user: &TestUser, extension: &str, file: Vec<u8>) -> String {
    let (id, url, fields) = new_upload(app, user, extension).await;
    assert_eq!(upload(&url, &fields, file).await.0, StatusCode::NO_CONTENT);
    id
}

/// The rendered picture of a finished generation made from `body`.
async fn rendered(app: &TestApp, user: &TestUser, body: &serde_json::Value) -> image::RgbImage {
    let id = app.create_generation(user, body).await;
    let generation = app.finished_generation(user, &id).await;
    assert_eq!(generation["status"], "COMPLETE", "{generation}");
    let (_, _, jpeg) = app.download(generation["generated_images"][0]["url"].as_str().unwrap()).await;
    image::load_from_memory(&jpeg).unwrap().to_rgb8()
}

/// The mean colour of the pixels of `picture` that `keep` selects.
fn mean(picture: &image::RgbImage, keep: impl Fn(u32, u32) -> bool) -> [f64; 3] {
    let (mut sum, mut count) = ([0f64; 3], 0f64);
    for (x, y, pixel) in picture.enumerate_pixels() {
        if keep(x, y) {
            count += 1.0;
            for c in 0..3 {
                sum[c] += f64::from(pixel[c]);
            }
        }
    }
    sum.map(|s| s / count)
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|c| (a[c] - b[c]).powi(2)).sum::<f64>().sqrt()
}

#[tokio::test]
async fn canvas_requests_paint_where_the_mask_or_transparency_says() {
    let app = spawn_app().await;
    let user = &app.admin;
    let plain_body = json!({"prompt": "a calm sea at noon", "width": 64, "height": 64, "num_images": 1, "seed": 42});
    let plain = rendered(&app, user, &plain_body).await;

    let pair = app.post(user, "/canvas-init-image", &json!({"initExtension": "png", "maskExtension": "png"})).await;
    let pair = &pair.body["uploadCanvasInitImage"];
    let red = picture(64, 64, [230, 10, 10], image::ImageFormat::Png);
    let mask = {
        let mask = image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x < 32 { 0 } else { 255 }]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        mask.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    };
    for (side, file) in [("init", red), ("mask", mask)] {
        let fields: BTreeMap<String, String> =
            serde_json::from_str(pair[format!("{side}Fields")].as_str().unwrap()).unwrap();
        assert_eq!(upload(pair[format!("{side}Url")].as_str().unwrap(), &fields, file).await.0, StatusCode::NO_CONTENT);
    }
    let mut body = plain_body.clone();
    body["canvasRequest"] = json!(true);
    body["canvasRequestType"] = json!("INPAINT");
    body["canvasInitId"] = pair["initImageId"].clone();
    body["canvasMaskId"] = pair["maskImageId"].clone();
    let inpainted = rendered(&app, user, &body).await;
    // Left of the mask's edge: the canvas picture; right of it: what the prompt renders.
    let left = mean(&inpainted, |x, _| x < 28);
    assert!(distance(left, [230.0, 10.0, 10.0]) < 30.0, "left {left:?}");
    let right = mean(&inpainted, |x, _| x > 36);
    assert!(distance(right, mean(&plain, |x, _| x > 36)) < 12.0, "right {right:?}");

    // OUTPAINT: the transparent half of the canvas picture is painted, no mask needed.
    let half = image::RgbaImage::from_fn(64, 64, |_, y| image::Rgba([10, 230, 10, if y < 32 { 255 } else { 0 }]));
    let mut bytes = std::io::Cursor::new(Vec::new());
    half.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    let pair = app.post(user, "/canvas-init-image", &json!({"initExtension": "png", "maskExtension": "png"})).await;
    let pair = &pair.body["uploadCanvasInitImage"];
    let fields: BTreeMap<String, String> = serde_json::from_str(pair["initFields"].as_str().unwrap()).unwrap();
    assert_eq!(upload(pair["initUrl"].as_str().unwrap(), &fields, bytes.into_inner()).await.0, StatusCode::NO_CONTENT);
    let mut body = plain_body.clone();
    body["canvasRequest"] = json!(true);
    body["canvasRequestType"] = json!("OUTPAINT");
    body["canvasInitId"] = pair["initImageId"].clone();
    let outpainted = rendered(&app, user, &body).await;
    let top = mean(&outpainted, |_, y| y < 28);
    assert!(distance(top, [10.0, 230.0, 10.0]) < 30.0, "top {top:?}");
    let bottom = mean(&outpainted, |_, y| y > 36);
    assert!(distance(bottom, mean(&plain, |_, y| y > 36)) < 12.0, "bottom {bottom:?}");
}

#[tokio::test]
async fn controlnets_and_image_prompts_guide_the_built_in_renderer() {
    let app = spawn_app_with(|config| {
        config.backends.push(crate::backends::backend("gpu", easel::config::BackendKind::Sdapi, "http://127.0.0.1:9"));
        config.models.push(crate::backends::model(crate::backends::OTHER_MODEL, "On a GPU", &["gpu"]));
    })
    .await;
    let user = &app.admin;
    let plain_body = json!({"prompt": "a quiet meadow", "width": 64, "height": 64, "num_images": 1, "seed": 7});
    let plain = rendered(&app, user, &plain_body).await;

    // An image prompt of pure green pulls the colours toward green.
    let green = uploaded(&app, user, "png", picture(32, 32, [0, 255, 0], image::ImageFormat::Png)).await;
    let mut body = plain_body.clone();
    body["imagePrompts"] = json!([green]);
    body["imagePromptWeight"] = json!(1.0);
    let prompted = rendered(&app, user, &body).await;
    let (before, after) = (mean(&plain, |_, _| true), mean(&prompted, |_, _| true));
    assert!(distance(after, [0.0, 255.0, 0.0]) < distance(before, [0.0, 255.0, 0.0]) - 40.0, "{before:?} -> {after:?}");

    // A controlnet's edges (a white square on black) are drawn into the picture.
    let square = image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb(if (16..48).contains(&x) && (16..48).contains(&y) { [255; 3] } else { [0; 3] })
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    square.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    let control = uploaded(&app, user, "png", bytes.into_inner()).await;
    let mut body = plain_body.clone();
    body["controlnets"] =
        json!([{"initImageId": control, "initImageType": "UPLOADED", "preprocessorId": 19, "weight": 1.0}]);
    let guided = rendered(&app, user, &body).await;
    let on_edge = |x: u32, y: u32| (x == 16 || x == 15) && (20..44).contains(&y);
    let (edge_before, edge_after) = (mean(&plain, on_edge), mean(&guided, on_edge));
    assert!(
        edge_after.iter().sum::<f64>() < edge_before.iter().sum::<f64>() * 0.6,
        "{edge_before:?} -> {edge_after:?}"
    );
    let inside = |x: u32, y: u32| (24..40).contains(&x) && (24..40).contains(&y);
    assert!(distance(mean(&plain, inside), mean(&guided, inside)) < 12.0, "away from edges the picture is unchanged");

    // Refusals name the field.
    let generated = app.create_generation(user, &plain_body).await;
    let generated = app.finished_generation(user, &generated).await;
    let image_id = generated["generated_images"][0]["id"].clone();
    let mask_pair =
        app.post(user, "/canvas-init-image", &json!({"initExtension": "png", "maskExtension": "png"})).await;
    let mask_id = mask_pair.body["uploadCanvasInitImage"]["maskImageId"].clone();
    let cases = [
        (json!({"canvasRequest": true, "canvasInitId": control}), "canvasRequestType", "required"),
        (
            json!({"canvasRequest": true, "canvasRequestType": "INPAINT", "canvasInitId": control}),
            "canvasMaskId",
            "required for INPAINT",
        ),
        (json!({"canvasInitId": control}), "canvasRequest", "set to true"),
        (
            json!({"canvasRequest": true, "canvasRequestType": "IMG2IMG", "canvasInitId": mask_id}),
            "canvasInitId",
            "its mask",
        ),
        (
            json!({"canvasRequest": true, "canvasRequestType": "PAINT", "canvasInitId": control}),
            "canvasRequestType",
            "INPAINT",
        ),
        (
            json!({"controlnets": [{"initImageType": "UPLOADED", "preprocessorId": 19}]}),
            "controlnets[0].initImageId",
            "required",
        ),
        (
            json!({"controlnets": [{"initImageId": control, "initImageType": "DRAWN", "preprocessorId": 19}]}),
            "controlnets[0].initImageType",
            "UPLOADED",
        ),
        (
            json!({"controlnets": [{"initImageId": control, "initImageType": "UPLOADED"}]}),
            "controlnets[0].preprocessorId",
            "required",
        ),
        (
            json!({"controlnets": [{"initImageId": control, "initImageType": "GENERATED", "preprocessorId": 19}]}),
            "controlnets[0].initImageId",
            "no image",
        ),
        (
            json!({"controlnets": [{"initImageId": image_id, "initImageType": "UPLOADED", "preprocessorId": 19}]}),
            "controlnets[0].initImageId",
            "no init image",
        ),
        (
            json!({"controlnets": [{"initImageId": control, "initImageType": "UPLOADED", "preprocessorId": 19, "weight": 3}]}),
            "controlnets[0].weight",
            "between 0 and 2",
        ),
        (json!({"imagePrompts": [7]}), "imagePrompts[0]", "string"),
        (json!({"imagePrompts": [green], "imagePromptWeight": 2}), "imagePromptWeight", "between 0 and 1"),
        (
            json!({"imagePrompts": [green], "modelId": crate::backends::OTHER_MODEL}),
            "imagePrompts",
            "runs on the backend gpu, which cannot serve image prompts",
        ),
    ];
    for (extra, field, words) in cases {
        let mut body = json!({"prompt": "p", "width": 64, "height": 64});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let reply = app.post(user, "/generations", &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
        let error = reply.body["error"].as_str().unwrap();
        assert!(error.contains(&format!("`{field}`")) && error.contains(words), "{body}: {error}");
    }
    // A generated image as a controlnet works too.
    let mut body = plain_body.clone();
    body["controlnets"] = json!([{"initImageId": image_id, "initImageType": "GENERATED", "preprocessorId": 19}]);
    rendered(&app, user, &body).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_uploads_straight_to_the_bucket() {
    let test = "the_python_sdk_uploads_straight_to_the_bucket";
    let Some(s3) = crate::storage::s3_server(test).await else { return };
    let Some(python) = tokio::task::spawn_blocking(move || crate::sdk::python_or_skip("sdk", test)).await.unwrap()
    else {
        return;
    };
    let client = reqwest::Client::new();
    assert!(client.put(format!("{}/sdk-uploads", s3.endpoint)).send().await.unwrap().status().is_success());
    let app = spawn_app_with(|config| {
        s3.use_bucket(config, "s3://sdk-uploads");
    })
    .await;
    let mut command = std::process::Command::new(python);
    command
        .arg(crate::sdk::script("s3_upload_check.py"))
        .env("EASEL_URL", &app.origin)
        .env("EASEL_KEY", &app.admin.key)
        .env("EASEL_USER_ID", app.admin.id.to_string())
        .env("S3_ENDPOINT", &s3.endpoint);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("s3 upload check passed"), "{stdout}");
}
