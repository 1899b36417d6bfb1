//! The ComfyUI adapter, called directly, against the ComfyUI imitation of `comfyui_api` (ComfyUI
//! itself cannot be installed here; the imitation follows the shapes of ComfyUI's `server.py` and
//! `execution.py`). The workflows are the examples shipped in `docs/`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use easel::config::BackendConfig;
use easel::render::backends::comfyui::{ComfyUi, Workflow};
use easel::render::backends::{Adapter, BackendError, BackendJob, Http, adapter};
use serde_json::{Value, json};

use crate::comfyui_api::{self, ComfyImitation};

const TXT2IMG: &str = include_str!("../../docs/comfyui-workflow.example.json");
const IMG2IMG: &str = include_str!("../../docs/comfyui-img2img.example.json");

fn config(url: &str) -> BackendConfig {
    serde_json::from_value(json!({"name": "comfy-test", "kind": "comfyui", "url": url})).unwrap()
}

fn comfyui(url: &str, workflow: &str) -> ComfyUi {
    ComfyUi::new(Http::new(&config(url)).unwrap(), Workflow::parse(workflow).unwrap())
}

fn job(id: &str) -> BackendJob {
    BackendJob {
        id: id.into(),
        model: Some("sd_xl_base_1.0.safetensors".into()),
        prompt: "a lighthouse at dusk".into(),
        negative_prompt: "blurry".into(),
        width: 64,
        height: 96,
        num_images: 2,
        seed: 1234,
        steps: 20,
        guidance: 7.0,
        scheduler: "EULER_ANCESTRAL_DISCRETE".into(),
        init_image: None,
        init_strength: None,
        mask: None,
        controls: Vec::new(),
    }
}

fn jpeg(width: u32, height: u32) -> Bytes {
    let image = image::RgbImage::from_pixel(width, height, image::Rgb([200, 30, 30]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image).write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    Bytes::from(out.into_inner())
}

/// The size and the colour of the top-left pixel of a PNG.
fn png_facts(bytes: &[u8]) -> (u32, u32, [u8; 3]) {
    assert_eq!(image::guess_format(bytes).unwrap(), image::ImageFormat::Png);
    let image = image::load_from_memory(bytes).unwrap().to_rgb8();
    (image.width(), image.height(), image.get_pixel(0, 0).0)
}

/// The workflow of the one `/prompt` request.
fn submitted(comfy: &ComfyImitation) -> Value {
    let prompts = comfy.requests_to("/prompt");
    assert_eq!(prompts.len(), 1, "one prompt was queued");
    assert_eq!(prompts[0].method, "POST");
    prompts[0].body.clone()
}

fn failed(result: Result<Vec<easel::render::backends::BackendImage>, BackendError>) -> String {
    match result {
        Err(BackendError::Failed(reason)) => reason,
        other => panic!("expected a failed job, got {other:?}"),
    }
}

#[tokio::test]
async fn txt2img_returns_the_images_asked_for_with_every_placeholder_filled_and_typed() {
    let comfy = comfyui_api::start().await;
    let backend = comfyui(&comfy.url, TXT2IMG);
    backend.health().await.unwrap();

    let images = backend.generate(&job("gen-txt")).await.unwrap();

    assert_eq!(images.len(), 2);
    let first = png_facts(&images[0].bytes);
    let second = png_facts(&images[1].bytes);
    assert_eq!((first.0, first.1), (64, 96));
    assert_eq!((second.0, second.1), (64, 96));
    assert_ne!(first.2, second.2, "each image of the batch is its own");
    // One seed makes the batch: only the first image is what that seed alone makes.
    assert_eq!(images[0].seed, Some(1234));
    assert_eq!(images[1].seed, None);

    let body = submitted(&comfy);
    assert_eq!(body["client_id"], "gen-txt");
    let prompt = &body["prompt"];
    let sampler = &prompt["3"]["inputs"];
    assert!(sampler["seed"].is_u64() && sampler["seed"] == 1234, "{sampler}");
    assert!(sampler["steps"].is_u64() && sampler["steps"] == 20, "{sampler}");
    assert!(sampler["cfg"].is_f64() && sampler["cfg"] == 7.0, "{sampler}");
    assert_eq!(sampler["sampler_name"], "euler_ancestral");
    assert_eq!(sampler["scheduler"], "normal");
    assert_eq!(sampler["denoise"], 1.0);
    assert_eq!(sampler["latent_image"], json!(["5", 0]), "links are left alone");
    let latent = &prompt["5"]["inputs"];
    assert!(latent["width"].is_u64() && latent["width"] == 64, "{latent}");
    assert!(latent["height"].is_u64() && latent["height"] == 96, "{latent}");
    assert!(latent["batch_size"].is_u64() && latent["batch_size"] == 2, "{latent}");
    assert_eq!(prompt["6"]["inputs"]["text"], "a lighthouse at dusk");
    assert_eq!(prompt["7"]["inputs"]["text"], "blurry");
    assert_eq!(prompt["4"]["inputs"]["ckpt_name"], "sd_xl_base_1.0.safetensors");
    assert!(!prompt.to_string().contains("{{"), "no placeholder is left: {prompt}");

    // The history was polled under the prompt id, and the images fetched as /view wants them.
    let prompt_id = body["prompt_id"].as_str().unwrap();
    assert!(!comfy.requests_to(&format!("/history/{prompt_id}")).is_empty());
    let views = comfy.requests_to("/view");
    assert_eq!(views.len(), 2);
    assert_eq!(views[0].query["type"], "output");
    assert_eq!(views[0].query["subfolder"], "");
    assert!(views[0].query["filename"].starts_with("easel_"), "{:?}", views[0].query);
}

#[tokio::test]
async fn a_workflow_that_makes_more_images_gives_the_first_ones_and_one_that_makes_fewer_fails() {
    let comfy = comfyui_api::start().await;
    let fixed_batch = |size: u32| TXT2IMG.replace("\"{{batch_size}}\"", &size.to_string());

    let images = comfyui(&comfy.url, &fixed_batch(3)).generate(&job("gen-more")).await.unwrap();
    assert_eq!(images.len(), 2, "the first num_images of the SaveImage node");

    let reason = failed(comfyui(&comfy.url, &fixed_batch(1)).generate(&job("gen-fewer")).await);
    assert_eq!(reason, "ComfyUI made 1 image where 2 were asked for (the workflow does not use {{batch_size}})");
}

#[tokio::test]
async fn img2img_uploads_the_init_image_and_loads_it_by_the_name_comfyui_gave() {
    let comfy = comfyui_api::start().await;
    let backend = comfyui(&comfy.url, IMG2IMG);
    let mut img2img = job("gen-img2img");
    img2img.init_image = Some(jpeg(40, 30));
    img2img.init_strength = Some(0.3);

    let images = backend.generate(&img2img).await.unwrap();

    assert_eq!(images.len(), 2);
    assert_eq!(png_facts(&images[0].bytes).0, 64, "scaled to the size asked for");
    let uploads = comfy.requests_to("/upload/image");
    assert_eq!(uploads.len(), 1);
    let form = &uploads[0].body;
    assert_eq!(form["image"]["filename"], "easel-gen-img2img.jpg");
    assert_eq!(form["image"]["content_type"], "image/jpeg");
    assert_eq!(form["overwrite"], "true");
    assert_eq!(comfy.upload("easel-gen-img2img.jpg").unwrap(), img2img.init_image.clone().unwrap());

    let prompt = &submitted(&comfy)["prompt"];
    assert_eq!(prompt["10"]["inputs"]["image"], "easel-gen-img2img.jpg");
    let denoise = prompt["3"]["inputs"]["denoise"].as_f64().unwrap();
    assert!((denoise - 0.7).abs() < 1e-9, "denoise is 1 - init_strength: {denoise}");
    assert_eq!(prompt["13"]["inputs"]["amount"], 2);

    // The txt2img workflow cannot start from an image: said before anything is sent.
    let before = comfy.requests().len();
    let reason = failed(comfyui(&comfy.url, TXT2IMG).generate(&img2img).await);
    assert!(reason.contains("does not do image-to-image"), "{reason}");
    assert_eq!(comfy.requests().len(), before);
}

#[tokio::test]
async fn an_execution_error_fails_the_job_with_the_node_and_the_exception_message() {
    let comfy = comfyui_api::start().await;
    comfy.fail_next("CUDA error: out of memory\nTry a smaller image.");

    let reason = failed(comfyui(&comfy.url, TXT2IMG).generate(&job("gen-oom")).await);

    assert_eq!(reason, "ComfyUI failed at node 3 (KSampler): CUDA error: out of memory Try a smaller image.");
    assert!(comfy.requests_to("/view").is_empty());
}

#[tokio::test]
async fn a_refused_workflow_fails_the_job_naming_the_node_and_the_problem() {
    let comfy = comfyui_api::start().await;
    comfy.set_checkpoints(&["sd_xl_base_1.0.safetensors"]);
    let mut missing = job("gen-missing");
    missing.model = Some("dreamshaper_8.safetensors".into());

    let reason = failed(comfyui(&comfy.url, TXT2IMG).generate(&missing).await);

    assert!(
        reason.starts_with("ComfyUI refused the workflow: node 4 (CheckpointLoaderSimple): Value not in list"),
        "{reason}"
    );
    assert!(
        reason.ends_with("ckpt_name: 'dreamshaper_8.safetensors' not in ['sd_xl_base_1.0.safetensors']"),
        "{reason}"
    );
    let polled = comfy.requests().iter().any(|r| r.path.starts_with("/history"));
    assert!(!polled, "nothing was queued, so nothing is polled");

    // A model without backend_model, for a workflow that loads {{model}}: refused before sending.
    let mut unnamed = job("gen-unnamed");
    unnamed.model = None;
    let reason = failed(comfyui(&comfy.url, TXT2IMG).generate(&unnamed).await);
    assert!(reason.contains("backend_model"), "{reason}");
}

#[tokio::test]
async fn a_server_that_is_down_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let backend = comfyui(&url, TXT2IMG);

    assert!(matches!(backend.health().await, Err(BackendError::Unavailable(_))));
    let result = backend.generate(&job("gen-down")).await;
    assert!(matches!(result, Err(BackendError::Unavailable(_))), "{result:?}");
    let mut img2img = job("gen-down-img2img");
    img2img.init_image = Some(jpeg(8, 8));
    let result = comfyui(&url, IMG2IMG).generate(&img2img).await;
    assert!(matches!(result, Err(BackendError::Unavailable(_))), "{result:?}");
}

#[tokio::test]
async fn a_server_that_loses_the_job_is_unavailable() {
    let comfy = comfyui_api::start().await;
    comfy.lose_prompts(true);

    let result = comfyui(&comfy.url, TXT2IMG).generate(&job("gen-lost")).await;

    match result {
        Err(BackendError::Unavailable(reason)) => assert!(reason.contains("lost the job"), "{reason}"),
        other => panic!("expected the server to be unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn cancel_deletes_a_queued_job_and_interrupts_a_running_one() {
    let comfy = comfyui_api::start().await;
    comfy.hang(true);
    let backend = Arc::new(comfyui(&comfy.url, TXT2IMG));
    let running_job = job("gen-running");
    let waiting_job = job("gen-waiting");

    let running = tokio::spawn({
        let (backend, job) = (backend.clone(), running_job.clone());
        async move { backend.generate(&job).await }
    });
    comfy.wait_until("a prompt runs", |c| c.running().is_some()).await;
    let waiting = tokio::spawn({
        let (backend, job) = (backend.clone(), waiting_job.clone());
        async move { backend.generate(&job).await }
    });
    comfy.wait_until("a prompt waits", |c| c.pending().len() == 1).await;
    assert_eq!(comfy.max_in_flight(), 2, "both jobs were queued at once");
    let running_id = comfy.running().unwrap();
    let waiting_id = comfy.pending()[0].clone();

    // The waiting one is deleted from the queue and not interrupted.
    waiting.abort();
    backend.cancel(&waiting_job).await;
    assert!(comfy.pending().is_empty());
    assert_eq!(comfy.deletes(), [waiting_id]);
    assert!(comfy.interrupts().is_empty(), "nothing is interrupted for a job that does not run");

    // The running one is interrupted, by its prompt id.
    backend.cancel(&running_job).await;
    assert_eq!(comfy.interrupts(), [Some(running_id)]);
    let reason = failed(tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap());
    assert_eq!(reason, "The job was interrupted on ComfyUI at node 3 (KSampler)");

    // A job that is not on the server (anymore) has nothing to cancel.
    let requests = comfy.requests().len();
    backend.cancel(&running_job).await;
    assert_eq!(comfy.requests().len(), requests);
}

#[tokio::test]
async fn jobs_queued_one_after_another_each_get_their_own_images() {
    let comfy = comfyui_api::start().await;
    comfy.set_delay(Duration::from_millis(200));
    let backend = Arc::new(comfyui(&comfy.url, TXT2IMG));
    let mut a = job("gen-a");
    a.seed = 1;
    let mut b = job("gen-b");
    b.seed = 2;
    b.num_images = 1;

    let (first, second) = tokio::join!(backend.generate(&a), backend.generate(&b));

    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!((first.len(), second.len()), (2, 1));
    assert_eq!((first[0].seed, second[0].seed), (Some(1), Some(2)));
    assert_ne!(png_facts(&first[0].bytes).2, png_facts(&second[0].bytes).2);
    assert_eq!(comfy.max_in_flight(), 2);
}

#[tokio::test]
async fn workflows_are_checked_when_the_backend_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let build = |path: std::path::PathBuf| {
        let mut config = config("http://127.0.0.1:9");
        config.workflow = Some(path);
        adapter(&config).map(drop).map_err(|e| e.to_string())
    };

    build(write("good.json", TXT2IMG)).unwrap();
    build(write("img2img.json", IMG2IMG)).unwrap();

    let no_output = TXT2IMG.replace("\"SaveImage\"", "\"ImageInvert\"");
    let error = build(write("no-output.json", &no_output)).unwrap_err();
    assert!(error.starts_with("backends.comfy-test.workflow: "), "{error}");
    assert!(
        error.ends_with("no-output.json: it has no SaveImage or PreviewImage node, so it would make no images"),
        "{error}"
    );

    let unknown = TXT2IMG.replace("{{steps}}", "{{step_count}}");
    let error = build(write("unknown.json", &unknown)).unwrap_err();
    assert!(error.contains("node 3 (KSampler), input steps: {{step_count}} is not a placeholder"), "{error}");

    assert!(Workflow::parse(&no_output).is_err());
    assert!(Workflow::parse(&unknown).unwrap_err().contains("{{step_count}}"));
}

#[tokio::test]
async fn the_imitation_refuses_an_unfilled_workflow_as_comfyui_would() {
    // Guards the imitation itself: placeholders left as text do not pass ComfyUI's validation.
    let comfy = comfyui_api::start().await;
    let unfilled: Value = serde_json::from_str(TXT2IMG).unwrap();
    let answer = reqwest::Client::new()
        .post(format!("{}/prompt", comfy.url))
        .json(&json!({"prompt": unfilled, "client_id": "raw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["type"], "prompt_outputs_failed_validation");
    let sampler_errors: Vec<&str> =
        body["node_errors"]["3"]["errors"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(sampler_errors.contains(&"invalid_input_type"), "{body}");
    assert!(sampler_errors.contains(&"value_not_in_list"), "{body}");
    assert_eq!(body["node_errors"]["4"]["class_type"], "CheckpointLoaderSimple");
    assert!(comfy.pending().is_empty() && comfy.running().is_none());
}
