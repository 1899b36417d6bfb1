//! Inference backends against real servers: a Cog predictor served by `cog` 0.23.1 from PyPI
//! (`python -m cog.server.http`, the predictor in `tests/cog/`), and stable-diffusion.cpp's
//! `sd-server` built from the PyPI source distribution (`tests/sdserver/`) with random SD 1.5
//! weights, for the `sdapi` and `openai` kinds. Dispatch (slots, routing, failover, timeouts,
//! cancels) is tested on the Cog server and on the ComfyUI imitation (`comfyui_api.rs`).
//!
//! The servers are provisioned on first use (a virtualenv under `target/`, the sd-server binary
//! and the weights in a cache outside the repository); without Python or the registries the
//! tests say loudly that they were skipped, except under CI (`CI=true`), where they fail.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use easel::config::{BackendConfig, BackendKind, Config};
use easel::models::ModelConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::{Reply, TestCa, TestReceiver};
use crate::sdk::python_or_skip;

/// The model the tests route to their backends.
pub const MODEL: &str = "5c0a7e1e-0000-4000-8000-00000000000a";
/// A second model, for head-of-line tests.
pub const OTHER_MODEL: &str = "5c0a7e1e-0000-4000-8000-00000000000b";

pub fn backend(name: &str, kind: BackendKind, url: &str) -> BackendConfig {
    BackendConfig {
        name: name.into(),
        kind,
        url: url.into(),
        max_concurrent: 1,
        timeout: Duration::from_secs(60),
        api_key: None,
        headers: Default::default(),
        health_interval: Duration::from_millis(500),
        workflow: None,
        size_multiple: 8,
        sd_cpp_extra_args: false,
        variations: None,
        upscaler: "R-ESRGAN 4x+".into(),
        rembg_model: "u2net".into(),
        controlnet_models: Default::default(),
        ip_adapter: None,
    }
}

pub fn model(id: &str, name: &str, backends: &[&str]) -> ModelConfig {
    ModelConfig {
        sd_version: "v1_5".into(),
        width: 512,
        height: 512,
        backends: backends.iter().map(|b| b.to_string()).collect(),
        ..ModelConfig::new(id, name)
    }
}

/// A port nothing listens on (bound, then released).
pub fn closed_port_url() -> String {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// A child process killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    pub _dir: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `ready` says yes (the process must stay alive meanwhile).
fn wait_ready(process: &mut ServerProcess, what: &str, timeout: Duration, ready: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!("{what} exited during start-up: {status}");
        }
        if ready(&process.url) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} not ready within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn http_get(url: &str) -> Option<(u16, String)> {
    // A blocking probe from a blocking thread: a tiny HTTP/1.0 GET.
    use std::io::{Read, Write};
    let url = url::Url::parse(url).ok()?;
    let address = format!("{}:{}", url.host_str()?, url.port()?);
    let mut stream = std::net::TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {} HTTP/1.0\r\nHost: {address}\r\n\r\n", url.path()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    Some((status, body))
}

/// A Cog predictor server (`tests/cog/predict.py`), or `None` after announcing the skip.
pub fn start_cog(test: &str) -> Option<ServerProcess> {
    let python = python_or_skip("cog", test)?;
    let bin = python.parent().unwrap().to_path_buf();
    let predictor = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cog/predict.py");
    // Cog writes its input schema to the working directory: a scratch one.
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let child = Command::new(&python)
        .args(["-m", "cog.server.http", "--host", "127.0.0.1"])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("PORT", port.to_string())
        .env("COG_PREDICT_TYPE_STUB", format!("{}:Predictor", predictor.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cog starts");
    let mut process = ServerProcess { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
    wait_ready(&mut process, "the cog server", Duration::from_secs(60), |url| {
        http_get(&format!("{url}/health-check")).is_some_and(|(_, body)| body.contains("\"READY\""))
    });
    Some(process)
}

/// The Cog server's status (`READY`, `BUSY`, ...).
pub async fn cog_status(url: &str) -> String {
    let reply: Value = reqwest::get(format!("{url}/health-check")).await.unwrap().json().await.unwrap();
    reply["status"].as_str().unwrap_or_default().to_string()
}

/// Easel with `backends`, the test model routed to `model_backends`, fast polling, and a webhook
/// user whose callbacks reach `receiver`.
pub async fn easel_with(
    backends: Vec<BackendConfig>,
    model_backends: &[&str],
    ca: &TestCa,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    spawn_app_with(|config| {
        fast_webhooks(config, ca, &["0s", "50ms"]);
        config.backends = backends;
        config.models = vec![model(MODEL, "Test Backend Model", model_backends)];
        config.render.poll_interval = Duration::from_millis(100);
        configure(config);
    })
    .await
}

/// Creates a generation of `model` (64x64) and returns its id.
pub async fn generate(app: &TestApp, user: &TestUser, model: &str, prompt: &str, num_images: u32) -> String {
    app.create_generation(
        user,
        &json!({"prompt": prompt, "modelId": model, "width": 64, "height": 64, "num_images": num_images,
                "num_inference_steps": 10, "seed": 1234}),
    )
    .await
}

/// Polls the generation until it leaves PENDING, for up to `timeout`.
pub async fn finished_within(app: &TestApp, user: &TestUser, id: &str, timeout: Duration) -> Value {
    eventually(timeout, || async {
        let reply = app.get(user, &format!("/generations/{id}")).await;
        let generation = reply.body["generations_by_pk"].clone();
        (generation["status"] != "PENDING").then_some(generation)
    })
    .await
}

/// The generation made by the official Python SDK (`tests/sdk/generate_with_sdk.py`).
pub async fn generate_with_sdk(app: &TestApp, user: &TestUser, prompt: &str, num_images: u32) -> Option<Value> {
    let python = tokio::task::spawn_blocking(|| python_or_skip("sdk", "generate_with_sdk")).await.unwrap()?;
    let mut command = Command::new(python);
    command
        .arg(crate::sdk::script("generate_with_sdk.py"))
        .env("EASEL_URL", &app.origin)
        .env("EASEL_KEY", &user.key)
        .env("MODEL_ID", MODEL)
        .env("PROMPT", prompt)
        .env("NUM_IMAGES", num_images.to_string())
        .env("SEED", "4242")
        .env("WAIT_SECONDS", "300");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    assert!(
        output.status.success(),
        "the SDK script failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("the script prints JSON"))
}

/// Checks that a finished generation's images are JPEGs of `width` x `height` served by Easel.
pub async fn assert_images(app: &TestApp, generation: &Value, count: usize, width: u32, height: u32) {
    let images = generation["images"].as_array().or(generation["generated_images"].as_array()).unwrap();
    assert_eq!(images.len(), count, "{generation}");
    for image in images {
        let (status, content_type, bytes) = app.download(image["url"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some("image/jpeg"));
        let decoded = image::load_from_memory(&bytes).expect("a JPEG");
        assert_eq!((decoded.width(), decoded.height()), (width, height));
    }
}

// ---------------------------------------------------------------------------------------------
// Cog
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_cog_generation_completes_through_the_sdk_and_calls_back() {
    let Some(cog) = tokio::task::spawn_blocking(|| start_cog("cog generation")).await.unwrap() else { return };
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = easel_with(vec![backend("cog-a", BackendKind::Cog, &cog.url)], &["cog-a"], &ca, |_| {}).await;
    let user = app.new_webhook_user("cog-sdk", &receiver.url, Some("cog-hook-key")).await;
    let Some(generation) = generate_with_sdk(&app, &user.user, "a lighthouse at dusk", 2).await else { return };
    assert_eq!(generation["status"], "COMPLETE", "{generation}");
    // The predictor reports the seed it used (the one Easel sent).
    assert_eq!(generation["seed"], 4242);
    assert_images(&app, &generation, 2, 64, 64).await;
    let callback = receiver.wait_for(1).await.remove(0).json();
    assert_eq!(callback["type"], "image_generation.complete");
    assert_eq!(callback["data"]["object"]["images"].as_array().unwrap().len(), 2);
    // Two images from one prediction differ.
    let urls: Vec<&str> = generation["images"].as_array().unwrap().iter().map(|i| i["url"].as_str().unwrap()).collect();
    assert_ne!(app.download(urls[0]).await.2, app.download(urls[1]).await.2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_predictor_fails_the_generation_in_words_and_calls_back() {
    let Some(cog) = tokio::task::spawn_blocking(|| start_cog("cog failure")).await.unwrap() else { return };
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = easel_with(vec![backend("cog-a", BackendKind::Cog, &cog.url)], &["cog-a"], &ca, |_| {}).await;
    let user = app.new_webhook_user("cog-fail", &receiver.url, None).await;
    let id = generate(&app, &user.user, MODEL, "please FAIL now", 1).await;
    let generation = finished_within(&app, &user.user, &id, Duration::from_secs(60)).await;
    assert_eq!(generation["status"], "FAILED", "{generation}");
    let reason = generation["failureReason"].as_str().unwrap_or_default();
    assert!(reason.contains("cog-a") && reason.contains("Prediction failed on purpose"), "{reason}");
    assert!(!reason.contains("Prediction failed: Prediction failed"), "cog's prefixes are removed: {reason}");
    let callback = receiver.wait_for(1).await.remove(0).json();
    assert_eq!(callback["type"], "image_generation.failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_its_timeout_fails_and_is_cancelled_on_the_server() {
    let Some(cog) = tokio::task::spawn_blocking(|| start_cog("cog timeout")).await.unwrap() else { return };
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let mut config = backend("cog-a", BackendKind::Cog, &cog.url);
    config.timeout = Duration::from_secs(2);
    let app = easel_with(vec![config], &["cog-a"], &ca, |_| {}).await;
    let user = app.new_webhook_user("cog-timeout", &receiver.url, None).await;
    let started = Instant::now();
    // The predictor sleeps 30 s on SLEEP.
    let id = generate(&app, &user.user, MODEL, "SLEEP please", 1).await;
    let generation = finished_within(&app, &user.user, &id, Duration::from_secs(20)).await;
    assert_eq!(generation["status"], "FAILED");
    let reason = generation["failureReason"].as_str().unwrap();
    assert!(reason.contains("timeout of 2s") && reason.contains("cancelled"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(15), "failed after {:?}", started.elapsed());
    // Cancelled on the server: it is free again long before the 30 s sleep would end.
    eventually(Duration::from_secs(5), || async { (cog_status(&cog.url).await == "READY").then_some(()) }).await;
    assert_eq!(receiver.wait_for(1).await[0].json()["type"], "image_generation.failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_pending_generation_cancels_it_on_the_backend() {
    let Some(cog) = tokio::task::spawn_blocking(|| start_cog("cog delete")).await.unwrap() else { return };
    let ca = TestCa::new();
    let app = easel_with(vec![backend("cog-a", BackendKind::Cog, &cog.url)], &["cog-a"], &ca, |_| {}).await;
    let user = app.new_user("cog-delete").await;
    let id = generate(&app, &user, MODEL, "SLEEP for a while", 1).await;
    eventually(Duration::from_secs(10), || async { (cog_status(&cog.url).await == "BUSY").then_some(()) }).await;
    let reply = app.delete(&user, &format!("/generations/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    eventually(Duration::from_secs(5), || async { (cog_status(&cog.url).await == "READY").then_some(()) }).await;
    // The next job runs at once.
    let next = generate(&app, &user, MODEL, "after the cancel", 1).await;
    assert_eq!(finished_within(&app, &user, &next, Duration::from_secs(20)).await["status"], "COMPLETE");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_is_down_hands_its_jobs_to_another_backend_of_the_model() {
    let Some(cog) = tokio::task::spawn_blocking(|| start_cog("cog failover")).await.unwrap() else { return };
    let ca = TestCa::new();
    let down = backend("down", BackendKind::Cog, &closed_port_url());
    let app =
        easel_with(vec![down, backend("cog-a", BackendKind::Cog, &cog.url)], &["down", "cog-a"], &ca, |_| {}).await;
    let user = app.new_user("cog-failover").await;
    let ids = [
        generate(&app, &user, MODEL, "one", 1).await,
        generate(&app, &user, MODEL, "two", 1).await,
        generate(&app, &user, MODEL, "three", 1).await,
    ];
    for id in &ids {
        let generation = finished_within(&app, &user, id, Duration::from_secs(60)).await;
        assert_eq!(generation["status"], "COMPLETE", "{generation}");
    }
    // The operator sees which backend is down, and why.
    let health: Value = app.client.get(format!("{}/healthz", app.origin)).send().await.unwrap().json().await.unwrap();
    let backends = health["backends"].as_array().unwrap();
    let down = backends.iter().find(|b| b["name"] == "down").unwrap();
    assert_eq!(down["health"], "unhealthy", "{health}");
    assert!(down["lastError"].as_str().unwrap().contains("cannot be reached"), "{health}");
    let up = backends.iter().find(|b| b["name"] == "cog-a").unwrap();
    assert_eq!(up["health"], "healthy", "{health}");
    assert_eq!(up["maxConcurrent"], 1);
    assert_eq!(up["models"][0]["id"], MODEL);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_without_an_available_backend_fails_its_jobs_after_the_wait() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = easel_with(vec![backend("down", BackendKind::Sdapi, &closed_port_url())], &["down"], &ca, |config| {
        config.render.no_backend_timeout = Duration::from_secs(2);
    })
    .await;
    let user = app.new_webhook_user("stranded", &receiver.url, None).await;
    let id = generate(&app, &user.user, MODEL, "nobody home", 1).await;
    // Waits in the queue first: visible as PENDING.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let reply = app.get(&user.user, &format!("/generations/{id}")).await;
    assert_eq!(reply.body["generations_by_pk"]["status"], "PENDING");
    let generation = finished_within(&app, &user.user, &id, Duration::from_secs(20)).await;
    assert_eq!(generation["status"], "FAILED");
    let reason = generation["failureReason"].as_str().unwrap();
    assert!(reason.contains("no backend of this model has been available for 2s"), "{reason}");
    assert!(reason.contains("down cannot be reached"), "{reason}");
    assert_eq!(receiver.wait_for(1).await[0].json()["type"], "image_generation.failed");
    // Models without backends are not held up by it.
    let builtin = app.create_generation(&user.user, &small_generation("built-in")).await;
    assert_eq!(app.finished_generation(&user.user, &builtin).await["status"], "COMPLETE");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backends_command_lists_health_capacity_and_queues() {
    let ca = TestCa::new();
    let app = easel_with(vec![backend("down", BackendKind::Openai, &closed_port_url())], &["down"], &ca, |_| {}).await;
    let user = app.new_user("lister").await;
    generate(&app, &user, MODEL, "queued", 1).await;
    generate(&app, &user, MODEL, "queued too", 1).await;
    let config = app.config.clone();
    let dir = app.dir.path().to_path_buf();
    // Wait until a health check has been recorded.
    eventually(Duration::from_secs(10), || async {
        let output = backends_list(&dir, &config).await;
        (output[0]["health"] == "unhealthy").then_some(())
    })
    .await;
    let listed = backends_list(&dir, &config).await;
    let down = &listed[0];
    assert_eq!(down["name"], "down");
    assert_eq!(down["kind"], "openai");
    assert_eq!(down["running"], 0);
    assert_eq!(down["queued"], 2);
    assert!(down["lastError"].as_str().unwrap().contains("cannot be reached"), "{down}");
}

/// `easel backends list --json` on the test's configuration.
async fn backends_list(dir: &Path, config: &Config) -> Vec<Value> {
    let file = dir.join("backends-test.toml");
    std::fs::write(&file, toml_of(config)).unwrap();
    let (dir, file) = (dir.to_path_buf(), file.to_str().unwrap().to_string());
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        crate::child::easel_cli(&dir, &["--config", &file, "backends", "list", "--json"])
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

fn toml_of(config: &Config) -> String {
    let mut text = String::new();
    for backend in &config.backends {
        text.push_str(&format!(
            "[[backends]]\nname = {:?}\nkind = {:?}\nurl = {:?}\nmax_concurrent = {}\n\n",
            backend.name,
            backend.kind.as_str(),
            backend.url,
            backend.max_concurrent
        ));
    }
    for model in &config.models {
        text.push_str(&format!(
            "[[models]]\nid = {:?}\nname = {:?}\nbackends = {:?}\n\n",
            model.id, model.name, model.backends
        ));
    }
    text
}

/// Where the sd-server binary and the random weights are cached, outside the repository:
/// `EASEL_TEST_CACHE`, else `~/.cache/easel-test`.
fn cache_dir() -> PathBuf {
    std::env::var_os("EASEL_TEST_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/easel-test")
    })
}

// ---------------------------------------------------------------------------------------------
// stable-diffusion.cpp's sd-server, for the sdapi and openai kinds
// ---------------------------------------------------------------------------------------------

/// Runs a provisioning step; its failure is a skip (a failure under CI).
fn provision(test: &str, what: &str, command: &mut Command) -> Option<()> {
    let output = command.output().map_err(|e| e.to_string());
    let failure = match output {
        Ok(output) if output.status.success() => return Some(()),
        Ok(output) => format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        Err(e) => e,
    };
    let tail: String =
        failure.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {what} failed under CI:\n{tail}");
    }
    announce_skip(&format!("{test}: {what} failed:\n{tail}"));
    None
}

/// stable-diffusion.cpp's `sd-server`, built once from the PyPI source distribution (about 7
/// minutes on two cores; cached), on SD 1.5-shaped random weights (generated once, cached), or
/// `None` after announcing the skip.
pub fn start_sd_server(test: &str) -> Option<ServerProcess> {
    let python = python_or_skip("sdserver", test)?;
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdserver");
    let cache = cache_dir();
    let binary_dir = cache.join("sd-server-0.4.7");
    let weights = cache.join("sd15-random");
    provision(
        test,
        "building sd-server",
        Command::new("bash").arg(scripts.join("build.sh")).arg(&python).arg(&binary_dir),
    )?;
    provision(
        test,
        "writing the random weights",
        Command::new(&python)
            .arg(scripts.join("random_weights.py"))
            .arg(scripts.join("sd15-random-weights-manifest.json.gz"))
            .arg(&weights),
    )?;
    let dir = tempfile::tempdir().unwrap();
    let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(binary_dir.join("sd-server"))
        .arg("-m")
        .arg(&weights)
        .args(["--listen-ip", "127.0.0.1", "--listen-port", &port.to_string(), "-t", "2"])
        // It scans this folder for LoRAs on some requests; the default is the working directory.
        .arg("--lora-model-dir")
        .arg(dir.path())
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sd-server starts");
    let mut process = ServerProcess { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
    // It loads the model before it listens; then `/` answers 200.
    wait_ready(&mut process, "sd-server", Duration::from_secs(120), |url| {
        http_get(&format!("{url}/")).is_some_and(|(status, _)| status == 200)
    });
    Some(process)
}

fn sd_backend(name: &str, kind: BackendKind, url: &str) -> BackendConfig {
    let mut config = backend(name, kind, url);
    // stable-diffusion.cpp rounds other sizes up to a multiple of 64.
    config.size_multiple = 64;
    config.sd_cpp_extra_args = kind == BackendKind::Openai;
    // sd-server has none of AUTOMATIC1111's variation endpoints.
    config.variations = Some(Vec::new());
    config.timeout = Duration::from_secs(240);
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn sdapi_generates_on_stable_diffusion_cpp_text_to_image_and_image_to_image() {
    if not_applicable(Backend::Sqlite, "the adapters do not depend on the database; run once") {
        return;
    }
    let test = "sdapi on sd-server";
    let Some(server) = tokio::task::spawn_blocking(move || start_sd_server(test)).await.unwrap() else { return };
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = easel_with(vec![sd_backend("sd", BackendKind::Sdapi, &server.url)], &["sd"], &ca, |_| {}).await;
    let user = app.new_webhook_user("sdapi", &receiver.url, None).await;
    let Some(generation) = generate_with_sdk(&app, &user.user, "a red fox in the snow", 2).await else { return };
    assert_eq!(generation["status"], "COMPLETE", "{generation}");
    assert_images(&app, &generation, 2, 64, 64).await;
    // The seed the server reports using (in its PNGs) is the one Easel sent.
    assert_eq!(generation["seed"], 4242);
    assert_eq!(receiver.wait_for(1).await[0].json()["type"], "image_generation.complete");
    // Image-to-image from the first image, through /sdapi/v1/img2img.
    let init = generation["images"][0]["id"].as_str().unwrap();
    let id = app
        .create_generation(
            &user.user,
            &json!({"prompt": "the same fox at night", "modelId": MODEL, "width": 64, "height": 64, "num_images": 1,
                    "num_inference_steps": 10, "guidance_scale": 1, "init_generation_image_id": init,
                    "init_strength": 0.6}),
        )
        .await;
    let second = finished_within(&app, &user.user, &id, Duration::from_secs(240)).await;
    assert_eq!(second["status"], "COMPLETE", "{second}");
    assert_eq!(second["generated_images"].as_array().unwrap().len(), 1);
    // A size the server would silently change is refused before it gets there.
    let reply = app
        .post(&user.user, "/generations", &json!({"prompt": "odd", "modelId": MODEL, "width": 72, "height": 64}))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text.contains("`width` must be a multiple of 64"), "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_images_generate_on_stable_diffusion_cpp() {
    if not_applicable(Backend::Sqlite, "the adapters do not depend on the database; run once") {
        return;
    }
    let test = "openai on sd-server";
    let Some(server) = tokio::task::spawn_blocking(move || start_sd_server(test)).await.unwrap() else { return };
    let ca = TestCa::new();
    let mut openai = sd_backend("sd-openai", BackendKind::Openai, &server.url);
    openai.api_key = Some(serde_json::from_value(json!("sk-local-test")).unwrap());
    let app = easel_with(vec![openai], &["sd-openai"], &ca, |_| {}).await;
    let user = app.new_user("openai").await;
    let Some(generation) = generate_with_sdk(&app, &user, "a blue whale", 1).await else { return };
    assert_eq!(generation["status"], "COMPLETE", "{generation}");
    assert_images(&app, &generation, 1, 64, 64).await;
    // The seed went through stable-diffusion.cpp's prompt extension and came back in the PNG.
    assert_eq!(generation["seed"], 4242);
    // The server's own error, in words: it refuses a malformed prompt extension.
    let id = app
        .create_generation(
            &user,
            &json!({"prompt": "<sd_cpp_extra_args>{broken</sd_cpp_extra_args>", "modelId": MODEL,
                                          "width": 64, "height": 64, "num_images": 1}),
        )
        .await;
    let failed = finished_within(&app, &user, &id, Duration::from_secs(120)).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let reason = failed["failureReason"].as_str().unwrap();
    assert_eq!(reason, "sd-openai answered 400 Bad Request: invalid sd_cpp_extra_args");
}

// ---------------------------------------------------------------------------------------------
// Dispatch, on the ComfyUI imitation (`comfyui_api.rs`), which counts the jobs it holds at once
// ---------------------------------------------------------------------------------------------

fn comfy_backend(name: &str, url: &str) -> BackendConfig {
    let mut config = backend(name, BackendKind::Comfyui, url);
    config.workflow = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/comfyui-workflow.example.json"));
    config
}

fn comfy_model(id: &str, name: &str, backends: &[&str]) -> ModelConfig {
    ModelConfig { backend_model: Some("v1-5-pruned-emaonly.safetensors".into()), ..model(id, name, backends) }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_comfyui_generation_completes_through_the_sdk() {
    let comfy = crate::comfyui_api::start().await;
    let ca = TestCa::new();
    let app = easel_with(vec![comfy_backend("comfy", &comfy.url)], &["comfy"], &ca, |config| {
        config.models = vec![comfy_model(MODEL, "Comfy Model", &["comfy"])];
    })
    .await;
    let user = app.new_user("comfy-sdk").await;
    let Some(generation) = generate_with_sdk(&app, &user, "a comfy lighthouse", 2).await else { return };
    assert_eq!(generation["status"], "COMPLETE", "{generation}");
    assert_images(&app, &generation, 2, 64, 64).await;
    let prompt = &comfy.requests_to("/prompt")[0].body["prompt"];
    let filled = serde_json::to_string(prompt).unwrap();
    assert!(filled.contains("a comfy lighthouse") && filled.contains("v1-5-pruned-emaonly.safetensors"), "{filled}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_backends_with_one_slot_each_never_run_two_jobs_at_once() {
    let (first, second) = (crate::comfyui_api::start().await, crate::comfyui_api::start().await);
    for server in [&first, &second] {
        server.set_delay(Duration::from_millis(300));
    }
    let ca = TestCa::new();
    let backends = vec![comfy_backend("gpu-a", &first.url), comfy_backend("gpu-b", &second.url)];
    let app = easel_with(backends, &[], &ca, |config| {
        config.models = vec![comfy_model(MODEL, "Shared", &["gpu-a", "gpu-b"])];
    })
    .await;
    let user = app.new_user("slots").await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(generate(&app, &user, MODEL, &format!("job {n}"), 1).await);
    }
    for id in &ids {
        assert_eq!(finished_within(&app, &user, id, Duration::from_secs(30)).await["status"], "COMPLETE");
    }
    assert_eq!((first.max_in_flight(), second.max_in_flight()), (1, 1), "one job at a time on each server");
    let (a, b) = (first.requests_to("/prompt").len(), second.requests_to("/prompt").len());
    assert_eq!(a + b, 6);
    assert!(a >= 1 && b >= 1, "both backends took jobs ({a} and {b})");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_model_does_not_hold_up_another_models_jobs() {
    let (slow, fast) = (crate::comfyui_api::start().await, crate::comfyui_api::start().await);
    slow.set_delay(Duration::from_secs(2));
    let ca = TestCa::new();
    let backends = vec![comfy_backend("slow", &slow.url), comfy_backend("fast", &fast.url)];
    let app = easel_with(backends, &[], &ca, |config| {
        config.models = vec![comfy_model(MODEL, "Busy", &["slow"]), comfy_model(OTHER_MODEL, "Free", &["fast"])];
    })
    .await;
    let user = app.new_user("head-of-line").await;
    let mut busy = Vec::new();
    for n in 0..4 {
        busy.push(generate(&app, &user, MODEL, &format!("busy {n}"), 1).await);
    }
    let other = generate(&app, &user, OTHER_MODEL, "not waiting", 1).await;
    let builtin = app.create_generation(&user, &small_generation("built-in meanwhile")).await;
    assert_eq!(finished_within(&app, &user, &other, Duration::from_secs(5)).await["status"], "COMPLETE");
    assert_eq!(app.finished_generation(&user, &builtin).await["status"], "COMPLETE");
    // The busy model's jobs wait in the database, visible as PENDING.
    let mut pending = 0;
    for id in &busy {
        if app.get(&user, &format!("/generations/{id}")).await.body["generations_by_pk"]["status"] == "PENDING" {
            pending += 1;
        }
    }
    assert!(pending >= 3, "only {pending} of the busy model's jobs still wait");
    assert_eq!(slow.max_in_flight(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_sharing_postgresql_share_a_backends_slots() {
    if not_applicable(Backend::Postgres, "several nodes need PostgreSQL") {
        return;
    }
    let comfy = crate::comfyui_api::start().await;
    comfy.set_delay(Duration::from_millis(300));
    let ca = TestCa::new();
    let master_key: easel::config::SecretText =
        serde_json::from_value(json!(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32])))
            .unwrap();
    let app = easel_with(vec![comfy_backend("gpu", &comfy.url)], &[], &ca, |config| {
        config.models = vec![comfy_model(MODEL, "Shared", &["gpu"])];
        config.master_key = Some(master_key.clone());
    })
    .await;
    let mut second_config = app.config.clone();
    let second_dir = TestDir { temp: tempfile::tempdir().unwrap(), database: None };
    second_config.data_dir = second_dir.path().to_path_buf();
    let second = start_in(second_dir, second_config).await;
    let user = app.new_user("two-nodes").await;
    let mut ids = Vec::new();
    for n in 0..6 {
        // Half the jobs through each node's API.
        let node = if n % 2 == 0 { &app } else { &second };
        ids.push(generate(node, &user, MODEL, &format!("job {n}"), 1).await);
    }
    for id in &ids {
        assert_eq!(finished_within(&app, &user, id, Duration::from_secs(30)).await["status"], "COMPLETE");
    }
    assert_eq!(comfy.max_in_flight(), 1, "max_concurrent = 1 holds across nodes");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_hangs_past_the_timeout_is_cancelled_and_runs_on_another_backend() {
    let (hung, healthy) = (crate::comfyui_api::start().await, crate::comfyui_api::start().await);
    hung.hang(true);
    let ca = TestCa::new();
    let mut first = comfy_backend("hung", &hung.url);
    first.timeout = Duration::from_secs(1);
    let backends = vec![first, comfy_backend("healthy", &healthy.url)];
    let app = easel_with(backends, &[], &ca, |config| {
        config.models = vec![comfy_model(MODEL, "Failover", &["hung", "healthy"])];
    })
    .await;
    let user = app.new_user("hang-failover").await;
    // Both backends in the rotation first, so the job goes to the first one, which hangs.
    eventually(Duration::from_secs(10), || async {
        let health: Value =
            app.client.get(format!("{}/healthz", app.origin)).send().await.unwrap().json().await.unwrap();
        health["backends"].as_array().unwrap().iter().all(|b| b["health"] == "healthy").then_some(())
    })
    .await;
    // A claim round that began before the hung server came into the rotation can still give the
    // job straight to the other backend (seen in CI on PostgreSQL: the hung server saw nothing but
    // its probe); then a new job tries again, and one of three must reach the hung server.
    let only_probed = || hung.requests().iter().all(|r| r.path == "/system_stats");
    let mut tries = 0;
    let generation = loop {
        tries += 1;
        let id = generate(&app, &user, MODEL, "hang then move", 1).await;
        let generation = finished_within(&app, &user, &id, Duration::from_secs(20)).await;
        assert_eq!(generation["status"], "COMPLETE", "{generation}");
        if !only_probed() || tries == 3 {
            break generation;
        }
    };
    // Tried on the hung server once (it may hang before the prompt is recorded): its probe passes
    // 1 s after the timeout, but the job stays off it for two timeouts, so the other backend
    // takes it.
    assert!(hung.requests_to("/prompt").len() <= 1, "tried twice on the hung server");
    let seen: Vec<String> = hung.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert!(
        !hung.interrupts().is_empty() || !hung.deletes().is_empty(),
        "cancelled on the hung server; after {tries} jobs it saw {seen:?}; the last generation: {generation}"
    );
    assert_eq!(healthy.requests_to("/prompt").len(), tries, "then run on the other backend");
}
