//! Elements applied to generations: on the built-in renderer (their names shape the picture),
//! and on an AUTOMATIC1111-style backend as `<lora:NAME:WEIGHT>` prompt tags; canvas inpainting
//! on such a backend as an `img2img` with a mask (here a small imitation of `/sdapi/v1` that
//! records what it is sent).

use std::sync::{Arc, Mutex};

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::backends::{MODEL, backend, closed_port_url, easel_with, model};
use crate::helpers::*;
use crate::receiver::TestCa;
use easel::config::BackendKind;

const XL_ELEMENT: &str = "6b1f0c2a-1111-4a2b-9c3d-000000000001";
const V15_ELEMENT: &str = "6b1f0c2a-1111-4a2b-9c3d-000000000002";

fn element(id: &str, name: &str, base_model: &str, lora: &str) -> easel::models::ElementConfig {
    serde_json::from_value(json!({"id": id, "name": name, "base_model": base_model, "lora": lora,
                                  "weight_min": 0, "weight_default": 1, "weight_max": 2}))
    .unwrap()
}

#[tokio::test]
async fn elements_shape_the_built_in_picture_and_are_listed_on_the_generation() {
    let app = spawn_app_with(|config| {
        config.elements = vec![
            element(XL_ELEMENT, "Copper Filigree", "SDXL_LIGHTNING", "copper_filigree"),
            element(V15_ELEMENT, "Old Film", "v1_5", "old_film"),
        ];
    })
    .await;
    let user = &app.admin;
    let plain = json!({"prompt": "a lighthouse", "width": 64, "height": 64, "num_images": 1, "seed": 5});
    let mut with_element = plain.clone();
    with_element["elements"] = json!([{"akUUID": XL_ELEMENT, "weight": 1.5}]);
    let (a, b) = (app.create_generation(user, &plain).await, app.create_generation(user, &with_element).await);
    let (a, b) = (app.finished_generation(user, &a).await, app.finished_generation(user, &b).await);
    let download = |g: &Value| g["generated_images"][0]["url"].as_str().unwrap().to_string();
    assert_ne!(app.download(&download(&a)).await.2, app.download(&download(&b)).await.2, "the element changed nothing");
    let reply = app.get(user, &format!("/generations/{}", b["id"].as_str().unwrap())).await;
    let applied = &reply.body["generations_by_pk"]["generation_elements"];
    assert_eq!(applied[0]["weightApplied"], 1.5, "{applied}");
    assert_eq!(applied[0]["lora"]["akUUID"], XL_ELEMENT);
    assert_eq!(applied[0]["lora"]["name"], "Copper Filigree");
    assert_eq!(a["generation_elements"], json!([]));

    let cases = [
        (json!([{"akUUID": uuid::Uuid::new_v4()}]), "elements[0].akUUID", "GET /elements"),
        (json!([{"akUUID": V15_ELEMENT}]), "elements[0].akUUID", "is for v1_5 models"),
        (json!([{"akUUID": XL_ELEMENT, "weight": 3}]), "elements[0].weight", "between 0 and 2"),
        (json!([{"weight": 1}]), "elements[0].akUUID", "required"),
        (json!(["x"]), "elements[0]", "must be an object"),
    ];
    for (elements, field, words) in cases {
        let mut body = plain.clone();
        body["elements"] = elements;
        let reply = app.post(user, "/generations", &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let error = reply.body["error"].as_str().unwrap();
        assert!(error.contains(&format!("`{field}`")) && error.contains(words), "{body}: {error}");
    }
    let mut body = plain.clone();
    body["userElements"] = json!([{"userLoraId": 3, "weight": 1}]);
    let reply = app.post(user, "/generations", &body).await;
    assert!(reply.text.contains("`userElements[0]`: Easel trains no elements"), "{}", reply.text);
}

/// What the imitation received at `/sdapi/v1/txt2img` and `/sdapi/v1/img2img`: path and body.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

async fn sdapi_imitation() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(64, 64, image::Rgb([90, 60, 30])).write_to(&mut png, image::ImageFormat::Png).unwrap();
    let image = base64::engine::general_purpose::STANDARD.encode(png.into_inner());
    let answer = |path: &'static str| {
        let (record, image) = (received.clone(), image.clone());
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (record, image) = (record.clone(), image.clone());
            async move {
                record.lock().unwrap().push((path.to_string(), body));
                axum::Json(json!({"images": [image], "info": "{\"seed\": 1234, \"all_seeds\": [1234]}"}))
            }
        })
    };
    let app = axum::Router::new()
        .route("/sdapi/v1/samplers", axum::routing::get(|| async { axum::Json(json!([{"name": "Euler"}])) }))
        .route("/sdapi/v1/txt2img", answer("txt2img"))
        .route("/sdapi/v1/img2img", answer("img2img"));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn elements_reach_sdapi_backends_as_lora_tags_and_other_kinds_refuse_them() {
    let (url, received) = sdapi_imitation().await;
    let ca = TestCa::new();
    let comfy_model = "6b1f0c2a-2222-4a2b-9c3d-000000000003";
    let backends =
        vec![backend("a1111", BackendKind::Sdapi, &url), backend("cog", BackendKind::Cog, &closed_port_url())];
    let app = easel_with(backends, &["a1111"], &ca, |config| {
        config.models.push(model(comfy_model, "On Cog", &["cog"]));
        config.elements = vec![element(V15_ELEMENT, "Old Film", "v1_5", "old_film")];
    })
    .await;
    let user = app.new_user("lora").await;
    let body = json!({"prompt": "a fox", "modelId": MODEL, "width": 64, "height": 64, "num_images": 1, "seed": 1234,
                      "elements": [{"akUUID": V15_ELEMENT, "weight": 0.8}]});
    let id = app.create_generation(&user, &body).await;
    let generation = crate::backends::finished_within(&app, &user, &id, std::time::Duration::from_secs(30)).await;
    assert_eq!(generation["status"], "COMPLETE", "{generation}");
    assert_eq!(received.lock().unwrap()[0].1["prompt"], "a fox <lora:old_film:0.8>");

    let mut body = body.clone();
    body["modelId"] = json!(comfy_model);
    let reply = app.post(&user, "/generations", &body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text.contains("`elements`: the model On Cog runs on the backend cog (cog)"), "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn canvas_inpainting_reaches_sdapi_backends_as_img2img_with_a_mask() {
    let (url, received) = sdapi_imitation().await;
    let ca = TestCa::new();
    let on_cog = "6b1f0c2a-2222-4a2b-9c3d-000000000004";
    let backends =
        vec![backend("a1111", BackendKind::Sdapi, &url), backend("cog", BackendKind::Cog, &closed_port_url())];
    let app = easel_with(backends, &["a1111"], &ca, |config| {
        config.models.push(model(on_cog, "On Cog", &["cog"]));
    })
    .await;
    let user = app.new_user("canvas").await;
    let pair = app.post(&user, "/canvas-init-image", &json!({"initExtension": "png", "maskExtension": "png"})).await;
    let pair = &pair.body["uploadCanvasInitImage"];
    let png = |picture: image::DynamicImage| {
        let mut bytes = std::io::Cursor::new(Vec::new());
        picture.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    };
    let init = png(image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(64, 64, image::Rgb([200, 30, 30]))));
    let mask = png(image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(64, 64, |x, _| {
        image::Luma([if x < 32 { 0 } else { 255 }])
    })));
    for (side, file) in [("init", init), ("mask", mask)] {
        let fields: std::collections::BTreeMap<String, String> =
            serde_json::from_str(pair[format!("{side}Fields")].as_str().unwrap()).unwrap();
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in fields {
            form = form.text(name, value);
        }
        form = form.part("file", reqwest::multipart::Part::bytes(file).file_name("p.png"));
        let url = pair[format!("{side}Url")].as_str().unwrap();
        assert_eq!(app.client.post(url).multipart(form).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    }
    let body = json!({"prompt": "a boat", "modelId": MODEL, "width": 64, "height": 64, "num_images": 1,
                      "canvasRequest": true, "canvasRequestType": "INPAINT",
                      "canvasInitId": pair["initImageId"], "canvasMaskId": pair["maskImageId"]});
    let id = app.create_generation(&user, &body).await;
    let generation = crate::backends::finished_within(&app, &user, &id, std::time::Duration::from_secs(30)).await;
    assert_eq!(generation["status"], "COMPLETE", "{generation}");
    let (path, sent) = received.lock().unwrap()[0].clone();
    assert_eq!(path, "img2img");
    assert_eq!(sent["inpainting_fill"], 1);
    assert_eq!(sent["denoising_strength"], 0.75);
    let decode = |field: &Value| {
        let bytes = base64::engine::general_purpose::STANDARD.decode(field.as_str().unwrap()).unwrap();
        image::load_from_memory(&bytes).unwrap()
    };
    let sent_mask = decode(&sent["mask"]).to_luma8();
    assert!(sent_mask.get_pixel(8, 8)[0] < 20 && sent_mask.get_pixel(56, 8)[0] > 235, "the mask as uploaded");
    let sent_init = decode(&sent["init_images"][0]).to_rgb8();
    assert!(sent_init.get_pixel(8, 8)[0] > 170, "the canvas picture");

    // A backend that cannot inpaint refuses INPAINT by name.
    let mut body = body.clone();
    body["modelId"] = json!(on_cog);
    let reply = app.post(&user, "/generations", &body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.text.contains("`canvasRequest`: the model On Cog runs on inference backends (cog)"),
        "{}",
        reply.text
    );
}
