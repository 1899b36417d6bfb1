//! A ComfyUI imitation for tests. ComfyUI itself (Python, PyTorch, model files) cannot be
//! installed here, so the ComfyUI adapter is tested against this server, built from the request
//! and answer shapes of ComfyUI's own source: the routes of `server.py` (`/system_stats`,
//! `/upload/image`, `/prompt`, `/history/{prompt_id}`, `/view`, `/queue`, `/interrupt`, also under
//! `/api`), and the validation errors, queue items, history entries and status messages of
//! `execution.py` and `main.py`. It is an imitation, not ComfyUI: where the adapter and the real
//! server disagree, the real server wins and this file is wrong.
//!
//! It knows the core nodes of a txt2img or img2img workflow (`CheckpointLoaderSimple`,
//! `CLIPTextEncode`, `EmptyLatentImage`, `KSampler`, `VAEDecode`, `VAEEncode`, `LoadImage`,
//! `ImageScale`, `RepeatLatentBatch`, `SaveImage`, `PreviewImage`) and validates their inputs as
//! ComfyUI does (types, lists of choices, installed checkpoints, uploaded images), answering
//! ComfyUI's 400 with `error` and `node_errors`. Unlike ComfyUI it validates every node, not only
//! those the outputs need, and refuses the whole prompt when any node is invalid.
//!
//! Prompts run one at a time, like ComfyUI's single worker, each taking a configurable delay. A
//! run "renders" by tracing the graph: each output node gets PNGs of the width, height and batch
//! size that reach it (from `EmptyLatentImage`, `ImageScale` or an uploaded image), one flat colour
//! per image, from the KSampler's seed plus the image's index.

use std::collections::{HashMap, VecDeque};
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// One request the imitation got.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Without the query, and without an `/api` prefix.
    pub path: String,
    pub query: HashMap<String, String>,
    /// The JSON body; for a multipart upload, its fields (`{"image": {"filename", "content_type",
    /// "size"}, "overwrite": "true"}`); `null` when there is none.
    pub body: Value,
}

/// A queued prompt, as ComfyUI's queue holds it.
#[derive(Clone, Debug)]
struct Item {
    number: u64,
    prompt_id: String,
    prompt: Value,
    extra_data: Value,
    outputs: Vec<String>,
}

impl Item {
    /// `[number, prompt_id, prompt, extra_data, outputs_to_execute]`, as `/queue` and history
    /// entries show it.
    fn listed(&self) -> Value {
        json!([self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs])
    }
}

struct Inner {
    requests: Vec<Recorded>,
    pending: VecDeque<Item>,
    running: Option<Item>,
    interrupt: bool,
    history: Map<String, Value>,
    /// Stored files by (type, subfolder, filename): uploads are `input`, SaveImage's `output`,
    /// PreviewImage's `temp`.
    files: HashMap<(String, String, String), Bytes>,
    checkpoints: Vec<String>,
    delay: Duration,
    hang: bool,
    lose_prompts: bool,
    fail_next: Option<String>,
    interrupts: Vec<Option<String>>,
    deletes: Vec<String>,
    number: u64,
    counter: u32,
    max_in_flight: usize,
}

impl Inner {
    fn in_flight(&self) -> usize {
        self.pending.len() + usize::from(self.running.is_some())
    }
}

struct Shared {
    inner: Mutex<Inner>,
    /// A prompt was queued (wakes the worker).
    queued: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running imitation; stops when dropped.
pub struct ComfyImitation {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ComfyImitation {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts an imitation on 127.0.0.1, with the checkpoints `sd_xl_base_1.0.safetensors` and
/// `v1-5-pruned-emaonly.safetensors` installed and runs of 50 ms.
pub async fn start() -> ComfyImitation {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            requests: Vec::new(),
            pending: VecDeque::new(),
            running: None,
            interrupt: false,
            history: Map::new(),
            files: HashMap::new(),
            checkpoints: vec!["sd_xl_base_1.0.safetensors".into(), "v1-5-pruned-emaonly.safetensors".into()],
            delay: Duration::from_millis(50),
            hang: false,
            lose_prompts: false,
            fail_next: None,
            interrupts: Vec::new(),
            deletes: Vec::new(),
            number: 0,
            counter: 0,
            max_in_flight: 0,
        }),
        queued: Notify::new(),
    });
    let app = axum::Router::new().fallback(handle).with_state(shared.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let worker = tokio::spawn(work(shared.clone()));
    ComfyImitation { url, shared, tasks: vec![server, worker] }
}

impl ComfyImitation {
    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// The requests to `path` (such as `/prompt`).
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    /// How long each run takes (50 ms unless set).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// While on, a run does not end until it is interrupted.
    pub fn hang(&self, on: bool) {
        self.shared.lock().hang = on;
    }

    /// The next run fails in its KSampler with this exception message, as ComfyUI reports an
    /// exception in a node.
    pub fn fail_next(&self, exception_message: &str) {
        self.shared.lock().fail_next = Some(exception_message.to_string());
    }

    /// The checkpoint files `CheckpointLoaderSimple` accepts.
    pub fn set_checkpoints(&self, names: &[&str]) {
        self.shared.lock().checkpoints = names.iter().map(|n| n.to_string()).collect();
    }

    /// While on, `/prompt` accepts prompts and forgets them at once (as a ComfyUI that restarts
    /// loses its queue).
    pub fn lose_prompts(&self, on: bool) {
        self.shared.lock().lose_prompts = on;
    }

    /// The prompt id of the running prompt.
    pub fn running(&self) -> Option<String> {
        self.shared.lock().running.as_ref().map(|item| item.prompt_id.clone())
    }

    /// The prompt ids waiting, in order.
    pub fn pending(&self) -> Vec<String> {
        self.shared.lock().pending.iter().map(|item| item.prompt_id.clone()).collect()
    }

    /// The most prompts that were queued or running at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.lock().max_in_flight
    }

    /// The `prompt_id` of every `/interrupt` (`None`: a global interrupt).
    pub fn interrupts(&self) -> Vec<Option<String>> {
        self.shared.lock().interrupts.clone()
    }

    /// Every prompt id a `/queue` `delete` named.
    pub fn deletes(&self) -> Vec<String> {
        self.shared.lock().deletes.clone()
    }

    /// An uploaded file (`input` folder, no subfolder).
    pub fn upload(&self, name: &str) -> Option<Bytes> {
        self.shared.lock().files.get(&("input".into(), String::new(), name.into())).cloned()
    }

    /// Waits until `done` holds, polling; panics after 10 s, naming `what`.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&ComfyImitation) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(Instant::now() < deadline, "the ComfyUI imitation never got to: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = match uri.path().strip_prefix("/api") {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => uri.path().to_string(),
    };
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let form = content_type.starts_with("multipart/form-data").then(|| multipart(content_type, &body));
    let json_body = match &form {
        Some(Some(form)) => form.summary(),
        Some(None) => json!("an unreadable multipart body"),
        None if body.is_empty() => Value::Null,
        None => serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body))),
    };
    shared.lock().requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: json_body.clone(),
    });

    match (method, path.as_str()) {
        (Method::GET, "/system_stats") => json_response(StatusCode::OK, system_stats()),
        (Method::POST, "/upload/image") => match form.flatten() {
            Some(form) => upload(&shared, form),
            None => StatusCode::BAD_REQUEST.into_response(),
        },
        (Method::POST, "/prompt") => prompt(&shared, &json_body),
        (Method::GET, "/prompt") => {
            let remaining = shared.lock().in_flight();
            json_response(StatusCode::OK, json!({"exec_info": {"queue_remaining": remaining}}))
        }
        (Method::GET, "/history") => json_response(StatusCode::OK, Value::Object(shared.lock().history.clone())),
        (Method::GET, p) if p.starts_with("/history/") => {
            let id = &p["/history/".len()..];
            let entry = shared.lock().history.get(id).cloned();
            json_response(
                StatusCode::OK,
                match entry {
                    Some(entry) => json!({ id: entry }),
                    None => json!({}),
                },
            )
        }
        (Method::GET, "/view") => view(&shared, &query),
        (Method::GET, "/queue") => {
            let inner = shared.lock();
            json_response(
                StatusCode::OK,
                json!({
                    "queue_running": inner.running.iter().map(Item::listed).collect::<Vec<_>>(),
                    "queue_pending": inner.pending.iter().map(Item::listed).collect::<Vec<_>>(),
                }),
            )
        }
        (Method::POST, "/queue") => {
            let mut inner = shared.lock();
            if json_body["clear"].as_bool() == Some(true) {
                inner.pending.clear();
            }
            for id in json_body["delete"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                inner.deletes.push(id.to_string());
                inner.pending.retain(|item| item.prompt_id != id);
            }
            StatusCode::OK.into_response()
        }
        (Method::POST, "/interrupt") => {
            let mut inner = shared.lock();
            let target = json_body["prompt_id"].as_str().map(str::to_string);
            // Newer ComfyUI interrupts only the named prompt, if it is the one running.
            let running = inner.running.as_ref().map(|item| item.prompt_id.clone());
            if running.is_some() && (target.is_none() || target == running) {
                inner.interrupt = true;
            }
            inner.interrupts.push(target);
            StatusCode::OK.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn system_stats() -> Value {
    json!({
        "system": {
            "os": "posix",
            "ram_total": 34359738368u64,
            "ram_free": 17179869184u64,
            "comfyui_version": "0.3.0 (imitation)",
            "python_version": "3.12.3 (imitation)",
            "pytorch_version": "2.5.1+cu124",
            "embedded_python": false,
            "argv": ["main.py", "--listen", "127.0.0.1"],
        },
        "devices": [{
            "name": "cuda:0 Imitation GPU : cudaMallocAsync",
            "type": "cuda",
            "index": 0,
            "vram_total": 25757220864u64,
            "vram_free": 24000000000u64,
            "torch_vram_total": 0,
            "torch_vram_free": 0,
        }],
    })
}

/// A multipart form's fields.
struct Form {
    /// name -> (filename, content type, bytes)
    fields: HashMap<String, (Option<String>, Option<String>, Bytes)>,
}

impl Form {
    fn text(&self, name: &str) -> Option<String> {
        self.fields.get(name).map(|(_, _, bytes)| String::from_utf8_lossy(bytes).into_owned())
    }

    fn summary(&self) -> Value {
        let mut summary = Map::new();
        for (name, (filename, content_type, bytes)) in &self.fields {
            let value = match filename {
                Some(filename) => json!({"filename": filename, "content_type": content_type, "size": bytes.len()}),
                None => json!(String::from_utf8_lossy(bytes)),
            };
            summary.insert(name.clone(), value);
        }
        Value::Object(summary)
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|at| from + at)
}

/// Parses a `multipart/form-data` body (enough of RFC 7578 for what reqwest and browsers send).
fn multipart(content_type: &str, body: &Bytes) -> Option<Form> {
    let boundary = content_type.split(';').find_map(|part| part.trim().strip_prefix("boundary="))?;
    let delimiter = format!("--{}", boundary.trim_matches('"'));
    let mut fields = HashMap::new();
    let mut at = find(body, delimiter.as_bytes(), 0)? + delimiter.len();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Some(Form { fields });
        }
        let headers_start = at + 2; // past the CRLF after the delimiter
        let headers_end = find(body, b"\r\n\r\n", headers_start)?;
        let content_start = headers_end + 4;
        let next = find(body, format!("\r\n{delimiter}").as_bytes(), content_start)?;
        let headers = String::from_utf8_lossy(&body[headers_start..headers_end]).into_owned();
        let mut name = None;
        let mut filename = None;
        let mut content_type = None;
        for line in headers.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else { continue };
            match key.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    for param in value.split(';').map(str::trim) {
                        if let Some(v) = param.strip_prefix("name=") {
                            name = Some(v.trim_matches('"').to_string());
                        } else if let Some(v) = param.strip_prefix("filename=") {
                            filename = Some(v.trim_matches('"').to_string());
                        }
                    }
                }
                "content-type" => content_type = Some(value.trim().to_string()),
                _ => {}
            }
        }
        fields.insert(name?, (filename, content_type, body.slice(content_start..next)));
        at = next + 2 + delimiter.len();
    }
}

/// `POST /upload/image`, as `server.py`'s `image_upload`: the `image` file goes to the `type`
/// folder (`input` unless said), renamed `name (1).ext` when it exists and `overwrite` is not set.
fn upload(shared: &Shared, form: Form) -> Response {
    let Some((Some(filename), _, bytes)) = form.fields.get("image").cloned() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if filename.is_empty() || filename.contains('/') || filename.contains("..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let kind = form.text("type").unwrap_or_else(|| "input".into());
    let subfolder = form.text("subfolder").unwrap_or_default();
    let overwrite = matches!(form.text("overwrite").as_deref(), Some("true" | "1"));
    let mut inner = shared.lock();
    let mut name = filename.clone();
    if !overwrite {
        let (stem, extension) = filename.rsplit_once('.').unwrap_or((&filename, ""));
        let mut i = 1;
        while inner.files.contains_key(&(kind.clone(), subfolder.clone(), name.clone())) {
            name = format!("{stem} ({i}).{extension}");
            i += 1;
        }
    }
    inner.files.insert((kind.clone(), subfolder.clone(), name.clone()), bytes);
    json_response(StatusCode::OK, json!({"name": name, "subfolder": subfolder, "type": kind}))
}

/// `GET /view?filename=&subfolder=&type=`.
fn view(shared: &Shared, query: &HashMap<String, String>) -> Response {
    let Some(filename) = query.get("filename") else { return StatusCode::NOT_FOUND.into_response() };
    if filename.starts_with('/') || filename.contains("..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let kind = query.get("type").cloned().unwrap_or_else(|| "output".into());
    let subfolder = query.get("subfolder").cloned().unwrap_or_default();
    match shared.lock().files.get(&(kind, subfolder, filename.clone())) {
        Some(bytes) => ([(header::CONTENT_TYPE, "image/png")], bytes.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `POST /prompt`: validates, queues, answers `{prompt_id, number, node_errors}`.
fn prompt(shared: &Shared, body: &Value) -> Response {
    let Some(prompt) = body.get("prompt") else {
        let error = json!({"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
            "extra_info": {}});
        return json_response(StatusCode::BAD_REQUEST, json!({"error": error, "node_errors": {}}));
    };
    let mut inner = shared.lock();
    let outputs = match validate(prompt, &inner) {
        Ok(outputs) => outputs,
        Err(refusal) => return json_response(StatusCode::BAD_REQUEST, refusal),
    };
    let prompt_id = body["prompt_id"].as_str().map(str::to_string).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let number = inner.number;
    inner.number += 1;
    let mut extra_data = body.get("extra_data").cloned().unwrap_or_else(|| json!({}));
    if let Some(client_id) = body.get("client_id") {
        extra_data["client_id"] = client_id.clone();
    }
    if !inner.lose_prompts {
        inner.pending.push_back(Item {
            number,
            prompt_id: prompt_id.clone(),
            prompt: prompt.clone(),
            extra_data,
            outputs,
        });
        let in_flight = inner.in_flight();
        inner.max_in_flight = inner.max_in_flight.max(in_flight);
        shared.queued.notify_one();
    }
    json_response(StatusCode::OK, json!({"prompt_id": prompt_id, "number": number, "node_errors": {}}))
}

/// What an input of a known node takes.
#[derive(Clone, Copy)]
enum Kind {
    Link,
    Int { min: i64, max: i64 },
    Float,
    Text,
    Choice(&'static [&'static str]),
    Checkpoint,
    InputImage,
}

const SAMPLERS: &[&str] = &[
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
];
const SCHEDULERS: &[&str] =
    &["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic"];
const UPSCALE_METHODS: &[&str] = &["nearest-exact", "bilinear", "area", "bicubic", "lanczos"];
const CROPS: &[&str] = &["disabled", "center"];
const SIZE: Kind = Kind::Int { min: 16, max: 16384 };
const OUTPUT_NODES: &[&str] = &["SaveImage", "PreviewImage"];

/// The required inputs of the nodes the imitation knows (a node type it does not know "does not
/// exist", as a missing custom node in ComfyUI).
fn inputs_of(class: &str) -> Option<&'static [(&'static str, Kind)]> {
    Some(match class {
        "CheckpointLoaderSimple" => &[("ckpt_name", Kind::Checkpoint)],
        "CLIPTextEncode" => &[("text", Kind::Text), ("clip", Kind::Link)],
        "EmptyLatentImage" => &[("width", SIZE), ("height", SIZE), ("batch_size", Kind::Int { min: 1, max: 4096 })],
        "KSampler" => &[
            ("model", Kind::Link),
            ("seed", Kind::Int { min: 0, max: i64::MAX }),
            ("steps", Kind::Int { min: 1, max: 10000 }),
            ("cfg", Kind::Float),
            ("sampler_name", Kind::Choice(SAMPLERS)),
            ("scheduler", Kind::Choice(SCHEDULERS)),
            ("positive", Kind::Link),
            ("negative", Kind::Link),
            ("latent_image", Kind::Link),
            ("denoise", Kind::Float),
        ],
        "VAEDecode" => &[("samples", Kind::Link), ("vae", Kind::Link)],
        "VAEEncode" => &[("pixels", Kind::Link), ("vae", Kind::Link)],
        "LoadImage" => &[("image", Kind::InputImage)],
        "ImageScale" => &[
            ("image", Kind::Link),
            ("upscale_method", Kind::Choice(UPSCALE_METHODS)),
            ("width", Kind::Int { min: 0, max: 16384 }),
            ("height", Kind::Int { min: 0, max: 16384 }),
            ("crop", Kind::Choice(CROPS)),
        ],
        "RepeatLatentBatch" => &[("samples", Kind::Link), ("amount", Kind::Int { min: 1, max: 64 })],
        "SaveImage" => &[("images", Kind::Link), ("filename_prefix", Kind::Text)],
        "PreviewImage" => &[("images", Kind::Link)],
        _ => return None,
    })
}

/// Python's `int(value)` of a JSON input, as ComfyUI converts INT inputs.
fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| u.min(i64::MAX as u64) as i64))
            .or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn as_float(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn node_error(kind: &str, message: String, details: String, input: &str) -> Value {
    json!({"type": kind, "message": message, "details": details, "extra_info": {"input_name": input}})
}

fn python_list(items: &[&str]) -> String {
    format!("[{}]", items.iter().map(|i| format!("'{i}'")).collect::<Vec<_>>().join(", "))
}

fn python_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// ComfyUI's `validate_prompt`: the output nodes, or the 400's body (`{error, node_errors}`).
fn validate(prompt: &Value, inner: &Inner) -> Result<Vec<String>, Value> {
    let invalid = |message: String, details: String| {
        let error = json!({"type": "invalid_prompt", "message": message, "details": details, "extra_info": {}});
        json!({"error": error, "node_errors": {}})
    };
    let Some(nodes) = prompt.as_object() else {
        return Err(invalid("Cannot execute because the prompt is not an object.".into(), String::new()));
    };
    let mut outputs = Vec::new();
    for (id, node) in nodes {
        let Some(class) = node.get("class_type").and_then(Value::as_str) else {
            return Err(invalid(
                "Cannot execute because a node is missing the class_type property.".into(),
                format!("Node ID '#{id}'"),
            ));
        };
        if inputs_of(class).is_none() {
            return Err(invalid(
                format!("Cannot execute because node {class} does not exist."),
                format!("Node ID '#{id}'"),
            ));
        }
        if OUTPUT_NODES.contains(&class) {
            outputs.push(id.clone());
        }
    }
    if outputs.is_empty() {
        let error = json!({"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
            "extra_info": {}});
        return Err(json!({"error": error, "node_errors": {}}));
    }
    let mut node_errors = Map::new();
    let mut summary = Vec::new();
    for (id, node) in nodes {
        let class = node["class_type"].as_str().unwrap_or_default();
        let inputs = node.get("inputs").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut errors = Vec::new();
        for (name, kind) in inputs_of(class).unwrap_or_default() {
            let Some(value) = inputs.get(*name) else {
                errors.push(node_error(
                    "required_input_missing",
                    "Required input is missing".into(),
                    name.to_string(),
                    name,
                ));
                continue;
            };
            let shown = python_value(value);
            let problem = match kind {
                Kind::Link => match value.as_array().map(Vec::as_slice) {
                    Some([Value::String(target), Value::Number(_)]) if nodes.contains_key(target) => None,
                    _ => Some(node_error(
                        "bad_linked_input",
                        "Bad linked input, must be a length-2 list of [node_id, slot_index]".into(),
                        name.to_string(),
                        name,
                    )),
                },
                Kind::Int { min, max } => match as_int(value) {
                    None => Some(node_error(
                        "invalid_input_type",
                        "Failed to convert an input value to a INT value".into(),
                        format!("{name}, {shown}, invalid literal for int() with base 10: '{shown}'"),
                        name,
                    )),
                    Some(v) if v < *min => Some(node_error(
                        "value_smaller_than_min",
                        format!("Value {v} smaller than min of {min}"),
                        name.to_string(),
                        name,
                    )),
                    Some(v) if v > *max => Some(node_error(
                        "value_bigger_than_max",
                        format!("Value {v} bigger than max of {max}"),
                        name.to_string(),
                        name,
                    )),
                    Some(_) => None,
                },
                Kind::Float => as_float(value).is_none().then(|| {
                    node_error(
                        "invalid_input_type",
                        "Failed to convert an input value to a FLOAT value".into(),
                        format!("{name}, {shown}, could not convert string to float: '{shown}'"),
                        name,
                    )
                }),
                Kind::Text => None,
                Kind::Choice(choices) => (!value.as_str().is_some_and(|v| choices.contains(&v))).then(|| {
                    node_error(
                        "value_not_in_list",
                        "Value not in list".into(),
                        format!("{name}: '{shown}' not in {}", python_list(choices)),
                        name,
                    )
                }),
                Kind::Checkpoint => {
                    (!value.as_str().is_some_and(|v| inner.checkpoints.iter().any(|c| c == v))).then(|| {
                        let installed: Vec<&str> = inner.checkpoints.iter().map(String::as_str).collect();
                        node_error(
                            "value_not_in_list",
                            "Value not in list".into(),
                            format!("{name}: '{shown}' not in {}", python_list(&installed)),
                            name,
                        )
                    })
                }
                Kind::InputImage => {
                    let (subfolder, file) = shown.rsplit_once('/').unwrap_or(("", &shown));
                    let known = inner.files.contains_key(&("input".into(), subfolder.to_string(), file.to_string()));
                    (!known).then(|| {
                        node_error(
                            "custom_validation_failed",
                            "Custom validation failed for node".into(),
                            format!("{name} - Invalid image file: {shown}"),
                            name,
                        )
                    })
                }
            };
            errors.extend(problem);
        }
        if !errors.is_empty() {
            for error in &errors {
                summary.push(format!(
                    "{}: {}",
                    error["message"].as_str().unwrap_or_default(),
                    error["details"].as_str().unwrap_or_default()
                ));
            }
            node_errors
                .insert(id.clone(), json!({"errors": errors, "dependent_outputs": outputs, "class_type": class}));
        }
    }
    if node_errors.is_empty() {
        return Ok(outputs);
    }
    let error = json!({"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
        "details": summary.join("\n"), "extra_info": {}});
    Err(json!({"error": error, "node_errors": node_errors}))
}

/// The worker: runs queued prompts one at a time.
async fn work(shared: Arc<Shared>) {
    loop {
        let item = loop {
            {
                let mut inner = shared.lock();
                if let Some(item) = inner.pending.pop_front() {
                    inner.running = Some(item.clone());
                    inner.interrupt = false;
                    break item;
                }
            }
            shared.queued.notified().await;
        };
        let started = Instant::now();
        let interrupted = loop {
            {
                let mut inner = shared.lock();
                if inner.interrupt {
                    inner.interrupt = false;
                    break true;
                }
                if !inner.hang && started.elapsed() >= inner.delay {
                    break false;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let mut inner = shared.lock();
        let entry = finish(&mut inner, &item, interrupted);
        inner.history.insert(item.prompt_id.clone(), entry);
        inner.running = None;
    }
}

/// The history entry of a run that ended (as `PromptQueue.task_done` stores it).
fn finish(inner: &mut Inner, item: &Item, interrupted: bool) -> Value {
    let id = &item.prompt_id;
    let mut messages = vec![
        json!(["execution_start", {"prompt_id": id, "timestamp": now_ms()}]),
        json!(["execution_cached", {"nodes": [], "prompt_id": id, "timestamp": now_ms()}]),
    ];
    let sampler = item
        .prompt
        .as_object()
        .and_then(|nodes| nodes.iter().find(|(_, node)| node["class_type"] == "KSampler").map(|(id, _)| id.clone()));
    let failure = if interrupted {
        Some(("execution_interrupted", None))
    } else {
        match inner.fail_next.take() {
            Some(message) => Some(("execution_error", Some(message))),
            None => match render(inner, item) {
                Ok(outputs) => {
                    messages.push(json!(["execution_success", {"prompt_id": id, "timestamp": now_ms()}]));
                    return json!({
                        "prompt": item.listed(),
                        "outputs": outputs,
                        "status": {"status_str": "success", "completed": true, "messages": messages},
                        "meta": item.outputs.iter().map(|node| (node.clone(), json!({"node_id": node, "display_node": node,
                            "parent_node": null, "real_node_id": node}))).collect::<Map<String, Value>>(),
                    });
                }
                Err(message) => Some(("execution_error", Some(message))),
            },
        }
    };
    let (event, message) = failure.expect("a run that did not succeed failed");
    let node_id = sampler.clone().unwrap_or_else(|| item.outputs[0].clone());
    let node_type = item.prompt[&node_id]["class_type"].clone();
    let mut data = json!({"prompt_id": id, "node_id": node_id, "node_type": node_type, "executed": [],
        "timestamp": now_ms()});
    if let Some(message) = message {
        data["exception_message"] = json!(message);
        data["exception_type"] = json!("RuntimeError");
        data["traceback"] = json!(["  File \"/ComfyUI/execution.py\", line 327, in execute\n"]);
        data["current_inputs"] = json!({});
        data["current_outputs"] = json!([]);
    }
    messages.push(json!([event, data]));
    json!({
        "prompt": item.listed(),
        "outputs": {},
        "status": {"status_str": "error", "completed": false, "messages": messages},
        "meta": {},
    })
}

/// Width, height, number of images, and the seed they were sampled with.
#[derive(Clone, Copy, Debug)]
struct Batch {
    width: u32,
    height: u32,
    count: u32,
    seed: Option<u64>,
}

fn linked<'a>(prompt: &'a Value, node: &Value, input: &str) -> Result<&'a Value, String> {
    let target = node["inputs"][input][0].as_str().ok_or_else(|| format!("input {input} is not linked"))?;
    prompt.get(target).ok_or_else(|| format!("node {target} does not exist"))
}

fn int_input(node: &Value, input: &str) -> Result<u32, String> {
    as_int(&node["inputs"][input]).map(|v| v as u32).ok_or_else(|| format!("input {input} is not an integer"))
}

/// Follows the graph back from `node` to what it makes (latents and images alike: the imitation
/// only tracks sizes).
fn trace(prompt: &Value, files: &HashMap<(String, String, String), Bytes>, node: &Value) -> Result<Batch, String> {
    let class = node["class_type"].as_str().unwrap_or_default();
    match class {
        "EmptyLatentImage" => Ok(Batch {
            width: int_input(node, "width")?,
            height: int_input(node, "height")?,
            count: int_input(node, "batch_size")?,
            seed: None,
        }),
        "KSampler" => {
            let batch = trace(prompt, files, linked(prompt, node, "latent_image")?)?;
            Ok(Batch { seed: as_int(&node["inputs"]["seed"]).map(|s| s as u64), ..batch })
        }
        "VAEDecode" => trace(prompt, files, linked(prompt, node, "samples")?),
        "VAEEncode" => trace(prompt, files, linked(prompt, node, "pixels")?),
        "RepeatLatentBatch" => {
            let batch = trace(prompt, files, linked(prompt, node, "samples")?)?;
            Ok(Batch { count: batch.count * int_input(node, "amount")?, ..batch })
        }
        "ImageScale" => {
            let batch = trace(prompt, files, linked(prompt, node, "image")?)?;
            Ok(Batch { width: int_input(node, "width")?, height: int_input(node, "height")?, ..batch })
        }
        "LoadImage" => {
            let name = node["inputs"]["image"].as_str().unwrap_or_default();
            let (subfolder, file) = name.rsplit_once('/').unwrap_or(("", name));
            let bytes = files
                .get(&("input".into(), subfolder.into(), file.into()))
                .ok_or_else(|| format!("[Errno 2] No such file or directory: '{name}'"))?;
            let image = image::load_from_memory(bytes).map_err(|e| format!("cannot identify image file: {e}"))?;
            Ok(Batch { width: image.width(), height: image.height(), count: 1, seed: None })
        }
        other => Err(format!("the imitation cannot run {other}")),
    }
}

/// A flat PNG; its colour comes from the seed.
fn png(width: u32, height: u32, seed: Option<u64>) -> Bytes {
    let colour = match seed {
        Some(seed) => {
            let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
            [(mixed >> 8) as u8, (mixed >> 24) as u8, (mixed >> 40) as u8]
        }
        None => [128, 128, 128],
    };
    let image = image::RgbImage::from_pixel(width, height, image::Rgb(colour));
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image).write_to(&mut out, image::ImageFormat::Png).unwrap();
    Bytes::from(out.into_inner())
}

/// Runs the output nodes: their images, as history `outputs` list them.
fn render(inner: &mut Inner, item: &Item) -> Result<Value, String> {
    let mut outputs = Map::new();
    for node_id in &item.outputs {
        let node = &item.prompt[node_id];
        let batch = trace(&item.prompt, &inner.files, linked(&item.prompt, node, "images")?)?;
        let save = node["class_type"] == "SaveImage";
        let mut images = Vec::new();
        for index in 0..batch.count {
            inner.counter += 1;
            let (filename, kind) = if save {
                let prefix = node["inputs"]["filename_prefix"].as_str().unwrap_or("ComfyUI");
                (format!("{prefix}_{:05}_.png", inner.counter), "output")
            } else {
                (format!("ComfyUI_temp_imita_{:05}_.png", inner.counter), "temp")
            };
            let bytes = png(batch.width, batch.height, batch.seed.map(|s| s.wrapping_add(u64::from(index))));
            inner.files.insert((kind.into(), String::new(), filename.clone()), bytes);
            images.push(json!({"filename": filename, "subfolder": "", "type": kind}));
        }
        outputs.insert(node_id.clone(), json!({"images": images}));
    }
    Ok(Value::Object(outputs))
}
