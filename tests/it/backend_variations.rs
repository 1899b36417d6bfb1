//! Variations, controlnets and image prompts on an AUTOMATIC1111-style backend: a recording
//! imitation of `/sdapi/v1` (with `extra-single-image`) and of the rembg extension's `/rembg`,
//! whose answers are pictures Easel could not have made itself, so a result shows where it came
//! from. The tests assert exactly what Easel sends (fields, the source picture's bytes, the
//! unzoom mask's geometry, controlnet units) and what it keeps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::backends::{MODEL, backend, closed_port_url, easel_with, finished_within, generate, model};
use crate::helpers::*;
use crate::init_images::{picture, uploaded};
use crate::receiver::TestCa;
use easel::config::BackendKind;

/// The colour of what the imitation paints (`txt2img`, `img2img`).
const PAINTED: [u8; 3] = [90, 60, 30];
/// The colour of its upscales.
const UPSCALED: [u8; 3] = [10, 200, 120];
/// The colour of the subject its background removal keeps (the right half).
const CUTOUT: [u8; 3] = [250, 250, 0];

#[derive(Default)]
struct Shared {
    /// Path (without `/sdapi/v1/`) and JSON body of each POST.
    received: Mutex<Vec<(String, Value)>>,
    /// Paths that answer an error: status and message.
    failures: Mutex<HashMap<String, (u16, String)>>,
    /// Whether `/sdapi/v1/samplers` (the health check) answers.
    sick: AtomicBool,
    /// Paths that never answer.
    hanging: Mutex<Vec<String>>,
}

/// A recording imitation of an AUTOMATIC1111 server with the rembg extension.
pub struct Imitation {
    pub url: String,
    shared: Arc<Shared>,
}

impl Imitation {
    pub async fn start() -> Imitation {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/sdapi/v1/samplers", axum::routing::get(samplers))
            .fallback(answer)
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Imitation { url, shared }
    }

    /// The bodies of the requests to `path` (`txt2img`, `extra-single-image`, `rembg`...).
    pub fn requests(&self, path: &str) -> Vec<Value> {
        self.shared.received.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, b)| b.clone()).collect()
    }

    /// Every path requested, in order.
    pub fn paths(&self) -> Vec<String> {
        self.shared.received.lock().unwrap().iter().map(|(p, _)| p.clone()).collect()
    }

    /// `path` answers `status` with `{"error": message}` from now on; a 502 to 504 also fails the
    /// health check (the server is down).
    pub fn fail(&self, path: &str, status: u16, message: &str) {
        self.shared.failures.lock().unwrap().insert(path.into(), (status, message.into()));
    }

    /// `path` never answers from now on.
    pub fn hang(&self, path: &str) {
        self.shared.hanging.lock().unwrap().push(path.into());
    }

    pub fn set_sick(&self, sick: bool) {
        self.shared.sick.store(sick, Ordering::SeqCst);
    }
}

async fn samplers(State(shared): State<Arc<Shared>>) -> Response {
    if shared.sick.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    axum::Json(json!([{"name": "Euler"}])).into_response()
}

fn png(picture: image::DynamicImage) -> String {
    let mut bytes = std::io::Cursor::new(Vec::new());
    picture.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes.into_inner())
}

fn solid(width: u32, height: u32, rgb: [u8; 3]) -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(width, height, image::Rgb(rgb)))
}

pub fn decode(field: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(field.as_str().expect("a base64 string")).unwrap()
}

async fn answer(State(shared): State<Arc<Shared>>, uri: Uri, body: axum::body::Bytes) -> Response {
    let path = uri.path().trim_start_matches('/').trim_start_matches("sdapi/v1/").to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.received.lock().unwrap().push((path.clone(), body.clone()));
    if shared.hanging.lock().unwrap().contains(&path) {
        std::future::pending::<()>().await;
    }
    let failure = shared.failures.lock().unwrap().get(&path).cloned();
    if let Some((status, message)) = failure {
        if (502..=504).contains(&status) {
            shared.sick.store(true, Ordering::SeqCst);
        }
        return (StatusCode::from_u16(status).unwrap(), axum::Json(json!({"error": message}))).into_response();
    }
    let size = |field: &str| body[field].as_u64().unwrap_or(64) as u32;
    let json = match path.as_str() {
        "txt2img" | "img2img" => json!({"images": [png(solid(size("width"), size("height"), PAINTED))],
                                        "info": "{\"seed\": 1234, \"all_seeds\": [1234]}"}),
        "extra-single-image" => {
            let source = image::load_from_memory(&decode(&body["image"])).unwrap();
            let factor = body["upscaling_resize"].as_f64().unwrap();
            let side = |n: u32| (f64::from(n) * factor).round() as u32;
            json!({"image": png(solid(side(source.width()), side(source.height()), UPSCALED)), "html_info": ""})
        }
        "rembg" => {
            let source = image::load_from_memory(&decode(&body["input_image"])).unwrap();
            let (width, height) = (source.width(), source.height());
            let cutout = image::RgbaImage::from_fn(width, height, |x, _| {
                let [r, g, b] = CUTOUT;
                image::Rgba(if x < width / 2 { [0, 0, 0, 0] } else { [r, g, b, 255] })
            });
            json!({"image": png(image::DynamicImage::ImageRgba8(cutout))})
        }
        _ => return (StatusCode::NOT_FOUND, axum::Json(json!({"detail": "Not Found"}))).into_response(),
    };
    axum::Json(json).into_response()
}

/// A complete generation of the backend model: its first image's id and file.
async fn backend_image(app: &TestApp, user: &TestUser, prompt: &str) -> (String, Vec<u8>) {
    let id = generate(app, user, MODEL, prompt, 1).await;
    let generation = finished_within(app, user, &id, Duration::from_secs(30)).await;
    assert_eq!(generation["status"], "COMPLETE", "{generation}");
    let image = &generation["generated_images"][0];
    let (status, _, bytes) = app.download(image["url"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    (image["id"].as_str().unwrap().to_string(), bytes)
}

/// Posts a variation request and returns the job's id.
async fn request_variation(app: &TestApp, user: &TestUser, path: &str, body: Value, job_key: &str) -> String {
    let reply = app.post(user, path, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body[job_key]["id"].as_str().unwrap_or_else(|| panic!("no {job_key}: {}", reply.text)).to_string()
}

/// Waits for the variation to leave PENDING; its record as served and as stored.
async fn variation_within(app: &TestApp, user: &TestUser, id: &str) -> (Value, easel::store::Variation) {
    let served = eventually(Duration::from_secs(30), || async {
        let reply = app.get(user, &format!("/variations/{id}")).await;
        let variation = reply.body["generated_image_variation_generic"][0].clone();
        (!variation.is_null() && variation["status"] != "PENDING").then_some(variation)
    })
    .await;
    let stored = app.easel.store.get_variation(user.id, id.parse().unwrap()).await.unwrap().unwrap();
    (served, stored)
}

async fn result_picture(app: &TestApp, variation: &Value) -> image::DynamicImage {
    assert_eq!(variation["status"], "COMPLETE", "{variation}");
    let (status, _, bytes) = app.download(variation["url"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    image::load_from_memory(&bytes).unwrap()
}

fn near(pixel: [u8; 3], expected: [u8; 3]) -> bool {
    pixel.iter().zip(expected).all(|(a, b)| a.abs_diff(b) <= 12)
}

fn sdapi_with_variations(url: &str) -> easel::config::BackendConfig {
    let mut config = backend("a1111", BackendKind::Sdapi, url);
    config.variations = Some(["upscale", "universal-upscaler", "unzoom", "nobg"].map(String::from).to_vec());
    config.upscaler = "4x-UltraSharp".into();
    config.rembg_model = "isnet-general-use".into();
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn every_variation_of_a_backend_image_runs_on_its_sdapi_backend() {
    let server = Imitation::start().await;
    let ca = TestCa::new();
    let app = easel_with(vec![sdapi_with_variations(&server.url)], &["a1111"], &ca, |_| {}).await;
    let user = app.new_user("variations").await;
    let (image, source) = backend_image(&app, &user, "a lighthouse on a cliff").await;

    // The 2x upscale: extra-single-image with the stored file, upscaled by the configured upscaler.
    let id = request_variation(&app, &user, "/variations/upscale", json!({"id": image}), "sdUpscaleJob").await;
    let (served, stored) = variation_within(&app, &user, &id).await;
    let sent = server.requests("extra-single-image");
    assert_eq!(sent.len(), 1, "{:?}", server.paths());
    assert_eq!(decode(&sent[0]["image"]), source, "the source image's bytes");
    assert_eq!(sent[0]["upscaling_resize"], 2.0);
    assert_eq!(sent[0]["upscaler_1"], "4x-UltraSharp");
    let upscaled = result_picture(&app, &served).await.to_rgb8();
    assert_eq!(upscaled.dimensions(), (128, 128));
    assert!(
        near(upscaled.get_pixel(64, 64).0, UPSCALED),
        "not the backend's picture: {:?}",
        upscaled.get_pixel(64, 64)
    );
    assert_eq!(stored.backend.as_deref(), Some("a1111"));

    // The universal upscaler: its multiplier.
    let body = json!({"generatedImageId": image, "upscaleMultiplier": 1.5});
    let id = request_variation(&app, &user, "/variations/universal-upscaler", body, "universalUpscaler").await;
    let (served, _) = variation_within(&app, &user, &id).await;
    assert_eq!(server.requests("extra-single-image")[1]["upscaling_resize"], 1.5);
    assert_eq!(result_picture(&app, &served).await.to_rgb8().dimensions(), (96, 96));

    // Background removal: /rembg with the file and the configured model; the cut-out kept as PNG.
    let id = request_variation(&app, &user, "/variations/nobg", json!({"id": image}), "sdNobgJob").await;
    let (nobg, stored) = variation_within(&app, &user, &id).await;
    let sent = server.requests("rembg");
    assert_eq!(sent.len(), 1);
    assert_eq!(decode(&sent[0]["input_image"]), source);
    assert_eq!((&sent[0]["model"], &sent[0]["return_mask"]), (&json!("isnet-general-use"), &json!(false)));
    assert!(nobg["url"].as_str().unwrap().ends_with(".png"), "{nobg}");
    let cutout = result_picture(&app, &nobg).await.to_rgba8();
    assert_eq!((cutout.get_pixel(5, 32)[3], cutout.get_pixel(60, 32)[3]), (0, 255), "the backend's transparency");
    assert!(near([cutout.get_pixel(60, 32)[0], cutout.get_pixel(60, 32)[1], cutout.get_pixel(60, 32)[2]], CUTOUT));
    assert_eq!(stored.backend.as_deref(), Some("a1111"));

    // Unzoom of the cut-out (`isVariation`): an img2img outpaint of the picture shrunk to the
    // middle two thirds, with a mask that repaints everything around it.
    let body = json!({"id": nobg["id"], "isVariation": true});
    let id = request_variation(&app, &user, "/variations/unzoom", body, "sdUnzoomJob").await;
    let (served, stored) = variation_within(&app, &user, &id).await;
    let sent = server.requests("img2img");
    assert_eq!(sent.len(), 1, "{:?}", server.paths());
    let sent = &sent[0];
    assert_eq!((&sent["width"], &sent["height"], &sent["seed"]), (&json!(64), &json!(64), &json!(1234)));
    assert_eq!(sent["prompt"], "a lighthouse on a cliff", "the generation's prompt");
    assert_eq!(sent["denoising_strength"], 0.75);
    assert_eq!(sent["inpainting_fill"], 1);
    let mask = image::load_from_memory(&decode(&sent["mask"])).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), (64, 64));
    // 2/3 of 64 is 43 pixels, from 10 to 52 on each axis.
    let inside = |x: u32, y: u32| (10..53).contains(&x) && (10..53).contains(&y);
    for (x, y, pixel) in mask.enumerate_pixels() {
        assert_eq!(pixel[0], if inside(x, y) { 0 } else { 255 }, "mask at ({x}, {y})");
    }
    let init = image::load_from_memory(&decode(&sent["init_images"][0])).unwrap().to_rgba8();
    assert_eq!(init.dimensions(), (64, 64));
    let kept = init.get_pixel(45, 32);
    assert!(near([kept[0], kept[1], kept[2]], CUTOUT) && kept[3] == 255, "the cut-out, shrunk: {kept:?}");
    let unzoomed = result_picture(&app, &served).await.to_rgb8();
    assert!(near(unzoomed.get_pixel(2, 2).0, PAINTED), "{:?}", unzoomed.get_pixel(2, 2));
    assert_eq!(stored.backend.as_deref(), Some("a1111"));
}

#[tokio::test(flavor = "multi_thread")]
async fn variations_no_backend_of_the_model_does_run_on_the_built_in_renderer() {
    let server = Imitation::start().await;
    let ca = TestCa::new();
    let mut config = backend("a1111", BackendKind::Sdapi, &server.url);
    config.variations = Some(vec!["upscale".into()]);
    let app = easel_with(vec![config], &["a1111"], &ca, |_| {}).await;
    let user = app.new_user("builtin").await;
    let (image, _) = backend_image(&app, &user, "a red barn").await;

    // nobg is not among the backend's `variations`: built in, nothing sent to the server.
    let id = request_variation(&app, &user, "/variations/nobg", json!({"id": image}), "sdNobgJob").await;
    let (served, stored) = variation_within(&app, &user, &id).await;
    assert_eq!(result_picture(&app, &served).await.to_rgba8().dimensions(), (64, 64));
    assert_eq!(stored.backend, None);
    assert!(server.requests("rembg").is_empty() && server.requests("img2img").is_empty(), "{:?}", server.paths());

    // The upscale is, so it goes to the server.
    let id = request_variation(&app, &user, "/variations/upscale", json!({"id": image}), "sdUpscaleJob").await;
    let (_, stored) = variation_within(&app, &user, &id).await;
    assert_eq!(stored.backend.as_deref(), Some("a1111"));
    assert_eq!(server.requests("extra-single-image").len(), 1);

    // Images of built-in models are upscaled built in.
    let built_in = app.create_generation(&user, &json!({"prompt": "a tree", "width": 64, "height": 64})).await;
    let generation = app.finished_generation(&user, &built_in).await;
    let image = generation["generated_images"][0]["id"].clone();
    let id = request_variation(&app, &user, "/variations/upscale", json!({"id": image}), "sdUpscaleJob").await;
    let (served, stored) = variation_within(&app, &user, &id).await;
    assert_eq!(result_picture(&app, &served).await.to_rgb8().dimensions(), (128, 128));
    assert_eq!(stored.backend, None);
    assert_eq!(server.requests("extra-single-image").len(), 1, "{:?}", server.paths());
}

#[tokio::test(flavor = "multi_thread")]
async fn variation_failures_on_backends_behave_like_generation_failures() {
    let (first, second) = (Imitation::start().await, Imitation::start().await);
    let ca = TestCa::new();
    let backends = vec![
        sdapi_with_variations(&first.url),
        easel::config::BackendConfig { name: "second".into(), ..sdapi_with_variations(&second.url) },
    ];
    second.set_sick(true);
    let app = easel_with(backends, &["a1111", "second"], &ca, |_| {}).await;
    let user = app.new_user("failures").await;
    let (image, source) = backend_image(&app, &user, "a windmill").await;

    // The job's failure: FAILED with the server's words.
    first.fail("rembg", 500, "rembg model isnet-general-use is not downloaded");
    let id = request_variation(&app, &user, "/variations/nobg", json!({"id": image}), "sdNobgJob").await;
    let (served, stored) = variation_within(&app, &user, &id).await;
    assert_eq!(served["status"], "FAILED", "{served}");
    let reason = stored.failure_reason.unwrap();
    assert!(reason.contains("a1111 answered 500") && reason.contains("is not downloaded"), "{reason}");
    first.shared.failures.lock().unwrap().clear();

    // The server's failure: the job goes to the model's other backend.
    first.fail("extra-single-image", 503, "loading the upscaler");
    let id = request_variation(&app, &user, "/variations/upscale", json!({"id": image}), "sdUpscaleJob").await;
    eventually(Duration::from_secs(10), || async { (!first.requests("extra-single-image").is_empty()).then_some(()) })
        .await;
    second.set_sick(false);
    let (served, stored) = variation_within(&app, &user, &id).await;
    assert_eq!(stored.backend.as_deref(), Some("second"), "{served}");
    assert_eq!(decode(&second.requests("extra-single-image")[0]["image"]), source);
    assert!(near(result_picture(&app, &served).await.to_rgb8().get_pixel(3, 3).0, UPSCALED));

    // Given back until every attempt is used, then FAILED with the server's words.
    let third = Imitation::start().await;
    let app = easel_with(vec![sdapi_with_variations(&third.url)], &["a1111"], &ca, |config| {
        config.render.max_attempts = 1;
    })
    .await;
    let user = app.new_user("attempts").await;
    let (image, _) = backend_image(&app, &user, "a harbour").await;
    third.fail("extra-single-image", 502, "bad gateway");
    let id = request_variation(&app, &user, "/variations/upscale", json!({"id": image}), "sdUpscaleJob").await;
    let (served, stored) = variation_within(&app, &user, &id).await;
    assert_eq!(served["status"], "FAILED", "{served}");
    let reason = stored.failure_reason.unwrap();
    assert!(reason.contains("in 1 attempts") && reason.contains("bad gateway"), "{reason}");

    // Past the backend's timeout: cancelled on the server (`interrupt`), FAILED (no other backend).
    let fourth = Imitation::start().await;
    let mut slow = sdapi_with_variations(&fourth.url);
    slow.timeout = Duration::from_secs(1);
    let app = easel_with(vec![slow], &["a1111"], &ca, |_| {}).await;
    let user = app.new_user("timeout").await;
    let (image, _) = backend_image(&app, &user, "a lighthouse").await;
    fourth.hang("img2img");
    let id = request_variation(&app, &user, "/variations/unzoom", json!({"id": image}), "sdUnzoomJob").await;
    let (served, stored) = variation_within(&app, &user, &id).await;
    assert_eq!(served["status"], "FAILED", "{served}");
    let reason = stored.failure_reason.unwrap();
    assert!(reason.contains("a1111 did not finish the variation within its timeout of 1s"), "{reason}");
    assert_eq!(fourth.requests("interrupt").len(), 1, "{:?}", fourth.paths());
}

#[tokio::test(flavor = "multi_thread")]
async fn controlnets_and_image_prompts_reach_sdapi_backends_as_controlnet_units() {
    let server = Imitation::start().await;
    let ca = TestCa::new();
    let plain_model = "6b1f0c2a-3333-4a2b-9c3d-000000000002";
    let cog_model = "6b1f0c2a-3333-4a2b-9c3d-000000000003";
    let mut a1111 = backend("a1111", BackendKind::Sdapi, &server.url);
    a1111.controlnet_models = [
        ("19".to_string(), "canny:control_v11p_sd15_canny [d14c016b]".to_string()),
        ("67".to_string(), "depth_midas:control_v11f1p_sd15_depth".to_string()),
    ]
    .into();
    a1111.ip_adapter = Some("ip-adapter_clip_sd15:ip-adapter_sd15 [6a3f6166]".into());
    let plain = backend("plain", BackendKind::Sdapi, &server.url);
    let cog = backend("cog", BackendKind::Cog, &closed_port_url());
    let app = easel_with(vec![a1111, plain, cog], &["a1111"], &ca, |config| {
        config.models.push(model(plain_model, "Plain A1111", &["plain"]));
        config.models.push(model(cog_model, "On Cog", &["cog"]));
    })
    .await;
    let user = app.new_user("controls").await;
    let (generated, generated_bytes) = backend_image(&app, &user, "a mountain").await;
    let edges = picture(64, 64, [220, 20, 20], image::ImageFormat::Png);
    let edges_id = uploaded(&app, &user, "png", edges.clone()).await;
    let look = picture(64, 64, [20, 20, 220], image::ImageFormat::Jpeg);
    let look_id = uploaded(&app, &user, "jpg", look.clone()).await;

    let body = json!({"prompt": "a castle", "modelId": MODEL, "width": 64, "height": 64, "num_images": 1,
        "controlnets": [
            {"initImageId": edges_id, "initImageType": "UPLOADED", "preprocessorId": 19, "weight": 0.7,
             "strengthType": "High"},
            {"initImageId": generated, "initImageType": "GENERATED", "preprocessorId": 67},
        ],
        "imagePrompts": [look_id], "imagePromptWeight": 0.4});
    let id = app.create_generation(&user, &body).await;
    let generation = finished_within(&app, &user, &id, Duration::from_secs(30)).await;
    assert_eq!(generation["status"], "COMPLETE", "{generation}");
    let sent = server.requests("txt2img");
    let units = sent.last().unwrap()["alwayson_scripts"]["controlnet"]["args"].as_array().unwrap().clone();
    assert_eq!(units.len(), 3, "{units:?}");
    let unit = |index: usize| {
        let unit = &units[index];
        (
            decode(&unit["image"]),
            unit["module"].as_str().unwrap().to_string(),
            unit["model"].as_str().unwrap().to_string(),
            unit["weight"].as_f64().unwrap(),
            unit["control_mode"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(
        unit(0),
        (
            edges,
            "canny".into(),
            "control_v11p_sd15_canny [d14c016b]".into(),
            0.7,
            "ControlNet is more important".into()
        )
    );
    assert_eq!(
        unit(1),
        (generated_bytes, "depth_midas".into(), "control_v11f1p_sd15_depth".into(), 1.0, "Balanced".into())
    );
    assert_eq!(
        unit(2),
        (look, "ip-adapter_clip_sd15".into(), "ip-adapter_sd15 [6a3f6166]".into(), 0.4, "Balanced".into())
    );
    assert!(units.iter().all(|unit| unit["enabled"] == true && unit["guidance_end"] == 1.0), "{units:?}");

    // What no backend of the model can serve is refused by name.
    let refused = |body: Value, words: &'static [&'static str]| {
        let (app, user) = (&app, &user);
        async move {
            let reply = app.post(user, "/generations", &body).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(words.iter().all(|w| reply.text.contains(w)), "{words:?}: {}", reply.text);
        }
    };
    let mut unmapped = body.clone();
    unmapped["controlnets"][1]["preprocessorId"] = json!(3);
    refused(unmapped, &["`controlnets[1].preprocessorId`", "backend a1111", "preprocessor 3"]).await;
    let mut no_ip_adapter = body.clone();
    no_ip_adapter["modelId"] = json!(plain_model);
    no_ip_adapter["controlnets"] = json!([]);
    refused(no_ip_adapter, &["`imagePrompts`", "backend plain", "no `ip_adapter`"]).await;
    let mut on_cog = body.clone();
    on_cog["modelId"] = json!(cog_model);
    refused(on_cog, &["`controlnets[0].preprocessorId`", "backend cog", "cog backends take no controlnets"]).await;
}

/// The multipart fields of each edit request, by name.
type Edits = Arc<Mutex<Vec<HashMap<String, Vec<u8>>>>>;

/// A recording imitation of an OpenAI-compatible image API: `generations` and `edits` (whose
/// multipart fields it keeps, by name).
struct OpenAiImitation {
    url: String,
    edits: Edits,
}

impl OpenAiImitation {
    async fn start() -> OpenAiImitation {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let edits: Edits = Arc::default();
        let size = |text: &str| {
            let (width, height) = text.split_once('x').unwrap();
            (width.parse::<u32>().unwrap(), height.parse::<u32>().unwrap())
        };
        let recorded = edits.clone();
        let app = axum::Router::new()
            .route("/v1/models", axum::routing::get(|| async { axum::Json(json!({"data": []})) }))
            .route(
                "/v1/images/generations",
                axum::routing::post(move |axum::Json(body): axum::Json<Value>| async move {
                    let (width, height) = size(body["size"].as_str().unwrap());
                    axum::Json(json!({"data": [{"b64_json": png(solid(width, height, PAINTED))}]}))
                }),
            )
            .route(
                "/v1/images/edits",
                axum::routing::post(move |mut form: axum::extract::Multipart| async move {
                    let mut fields = HashMap::new();
                    while let Some(field) = form.next_field().await.unwrap() {
                        let name = field.name().unwrap().to_string();
                        fields.insert(name, field.bytes().await.unwrap().to_vec());
                    }
                    let (width, height) = size(std::str::from_utf8(&fields["size"]).unwrap());
                    recorded.lock().unwrap().push(fields);
                    axum::Json(json!({"data": [{"b64_json": png(solid(width, height, UPSCALED))}]}))
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        OpenAiImitation { url, edits }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unzoom_runs_on_openai_backends_as_an_image_edit_with_a_transparent_mask() {
    let server = OpenAiImitation::start().await;
    let ca = TestCa::new();
    let mut images_api = backend("images", BackendKind::Openai, &server.url);
    images_api.variations = Some(vec!["unzoom".into()]);
    let app = easel_with(vec![images_api], &["images"], &ca, |_| {}).await;
    let user = app.new_user("openai").await;
    let (image, _) = backend_image(&app, &user, "a lighthouse").await;

    let id = request_variation(&app, &user, "/variations/unzoom", json!({"id": image}), "sdUnzoomJob").await;
    let (served, stored) = variation_within(&app, &user, &id).await;
    assert_eq!(stored.backend.as_deref(), Some("images"));
    let edits = server.edits.lock().unwrap().clone();
    assert_eq!(edits.len(), 1);
    let text = |name: &str| String::from_utf8(edits[0][name].clone()).unwrap();
    assert_eq!((text("prompt"), text("size"), text("n")), ("a lighthouse".into(), "64x64".into(), "1".into()));
    // OpenAI's mask: transparent where to paint (around the shrunk picture), opaque over it.
    let mask = image::load_from_memory(&edits[0]["mask"]).unwrap().to_rgba8();
    let inside = |x: u32, y: u32| (10..53).contains(&x) && (10..53).contains(&y);
    for (x, y, pixel) in mask.enumerate_pixels() {
        assert_eq!(pixel[3], if inside(x, y) { 255 } else { 0 }, "mask alpha at ({x}, {y})");
    }
    let init = image::load_from_memory(&edits[0]["image"]).unwrap().to_rgb8();
    assert!(near(init.get_pixel(32, 32).0, PAINTED), "the picture, shrunk: {:?}", init.get_pixel(32, 32));
    assert!(near(result_picture(&app, &served).await.to_rgb8().get_pixel(2, 2).0, UPSCALED), "the server's answer");

    // The upscale is not an openai variation: built in.
    let id = request_variation(&app, &user, "/variations/upscale", json!({"id": image}), "sdUpscaleJob").await;
    let (served, stored) = variation_within(&app, &user, &id).await;
    assert_eq!(stored.backend, None);
    assert_eq!(result_picture(&app, &served).await.to_rgb8().dimensions(), (128, 128));
    assert_eq!(server.edits.lock().unwrap().len(), 1);
}
