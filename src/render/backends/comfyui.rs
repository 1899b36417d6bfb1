//! ComfyUI's HTTP API (`/prompt`, `/history/{id}`, `/view`, `/upload/image`, `/queue`,
//! `/interrupt`, `/system_stats`), as its `server.py` and `execution.py` define it.
//!
//! ComfyUI runs graphs, not parameters: the operator exports a workflow in ComfyUI's API format
//! (a JSON object of node id -> `{class_type, inputs}`, from "Export (API)") and marks the inputs
//! Easel fills with placeholders. An input whose whole value is one of these strings is replaced:
//!
//! | placeholder           | becomes                                                          |
//! |-----------------------|------------------------------------------------------------------|
//! | `{{prompt}}`          | the prompt (text)                                                |
//! | `{{negative_prompt}}` | the negative prompt (text, empty when there is none)             |
//! | `{{seed}}`            | the seed (integer)                                               |
//! | `{{width}}`           | the width in pixels (integer)                                    |
//! | `{{height}}`          | the height in pixels (integer)                                   |
//! | `{{steps}}`           | the number of steps (integer)                                    |
//! | `{{cfg}}`             | the guidance scale (number)                                      |
//! | `{{sampler_name}}`    | KSampler's sampler for Leonardo's scheduler (see [`sampler`])    |
//! | `{{scheduler}}`       | KSampler's scheduler for Leonardo's scheduler (see [`sampler`])  |
//! | `{{batch_size}}`      | the number of images asked for (integer)                         |
//! | `{{model}}`           | the model's `backend_model`, the checkpoint file name (text)     |
//! | `{{init_image}}`      | the uploaded init image's name, as `LoadImage` takes it (text)   |
//! | `{{denoise}}`         | the denoising strength: `1 - init_strength` for image-to-image, else 1.0 (number) |
//!
//! `{{prompt}}` and `{{negative_prompt}}` may also sit inside a longer text
//! (`"masterpiece, {{prompt}}"`); every other placeholder must be the whole value. The workflow is
//! checked at start-up: it must use `{{prompt}}`, have a `SaveImage` or `PreviewImage` node, and
//! use no other `{{name}}`.
//!
//! A job uploads its init image (`POST /upload/image`), queues the filled workflow
//! (`POST /prompt`), polls `GET /history/{prompt_id}` until the entry appears, and downloads the
//! images of the `SaveImage` nodes (else the `PreviewImage` ones) with `GET /view`. A cancel
//! deletes the prompt from the queue and interrupts it if it is running.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{Adapter, BackendError, BackendImage, BackendJob, Http, Scheduler, error_message, shorten};

/// How often a queued prompt's history is asked for.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How often, while a prompt has no history yet, the queue is checked to still hold it (a
/// restarted ComfyUI forgets its queue; without this the job would wait for its timeout).
const QUEUE_CHECK_EVERY: Duration = Duration::from_secs(3);
/// How long polls may fail in a row before the server counts as unavailable.
const POLL_FAILURES_FOR: Duration = Duration::from_secs(10);
/// One poll, queue check or cancel request.
const SHORT_REQUEST: Duration = Duration::from_secs(30);
/// One upload, `/prompt` or image download.
const LONG_REQUEST: Duration = Duration::from_secs(120);

/// Every placeholder a workflow may use.
pub const PLACEHOLDERS: [&str; 13] = [
    "prompt",
    "negative_prompt",
    "seed",
    "width",
    "height",
    "steps",
    "cfg",
    "sampler_name",
    "scheduler",
    "batch_size",
    "model",
    "init_image",
    "denoise",
];

/// The placeholders that may be part of a longer text.
const TEXT_PLACEHOLDERS: [&str; 2] = ["prompt", "negative_prompt"];

/// The node types whose images are the job's (ComfyUI's built-in output nodes).
const SAVE_IMAGE: &str = "SaveImage";
const PREVIEW_IMAGE: &str = "PreviewImage";

/// KSampler's `sampler_name` and `scheduler` for Leonardo's scheduler. The names are ComfyUI's
/// (`KSAMPLER_NAMES`/`SAMPLER_NAMES` and `SCHEDULER_NAMES` in `comfy/samplers.py`); PNDM has no
/// ComfyUI counterpart and maps to its improved variant `ipndm`, and Leonardo's default to
/// ComfyUI's own default, `euler` with `normal`.
pub fn sampler(scheduler: Scheduler) -> (&'static str, &'static str) {
    match scheduler {
        Scheduler::Klms => ("lms", "normal"),
        Scheduler::EulerAncestral => ("euler_ancestral", "normal"),
        Scheduler::Euler => ("euler", "normal"),
        Scheduler::Ddim => ("ddim", "ddim_uniform"),
        Scheduler::DpmSolver => ("dpmpp_2m", "karras"),
        Scheduler::Pndm => ("ipndm", "normal"),
        Scheduler::Default => ("euler", "normal"),
    }
}

/// A workflow in ComfyUI's API format, checked, with its placeholders found.
#[derive(Clone, Debug)]
pub struct Workflow {
    nodes: Map<String, Value>,
    /// The placeholders it uses.
    uses: BTreeSet<&'static str>,
    /// The nodes whose images are the job's, in the workflow's order: the `SaveImage` nodes, or
    /// the `PreviewImage` ones when there is no `SaveImage`.
    outputs: Vec<String>,
}

impl Workflow {
    /// Checks `text` (the workflow file) and finds its placeholders. The error is a short
    /// sentence for the operator.
    pub fn parse(text: &str) -> Result<Workflow, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("it is not valid JSON: {e}"))?;
        let Value::Object(nodes) = json else {
            return Err("it must be a JSON object of nodes, in ComfyUI's API format (\"Export (API)\")".into());
        };
        if nodes.get("nodes").is_some_and(Value::is_array) && nodes.contains_key("links") {
            return Err("it is in ComfyUI's UI format; export the workflow with \"Export (API)\" instead".into());
        }
        if nodes.is_empty() {
            return Err("it has no nodes".into());
        }
        let mut uses = BTreeSet::new();
        let mut saves = Vec::new();
        let mut previews = Vec::new();
        for (id, node) in &nodes {
            let class = node.get("class_type").and_then(Value::as_str).ok_or_else(|| {
                format!("node {id} has no class_type, so this is not ComfyUI's API format (\"Export (API)\")")
            })?;
            let inputs = node
                .get("inputs")
                .and_then(Value::as_object)
                .ok_or_else(|| format!("node {id} ({class}) has no inputs object"))?;
            for (input, value) in inputs {
                let at = || format!("node {id} ({class}), input {input}");
                if let Some(target) = link_target(value)
                    && !nodes.contains_key(target)
                {
                    return Err(format!("{}: links to node {target}, which is not in the workflow", at()));
                }
                check_placeholders(value, &mut uses).map_err(|problem| format!("{}: {problem}", at()))?;
            }
            match class {
                SAVE_IMAGE => saves.push(id.clone()),
                PREVIEW_IMAGE => previews.push(id.clone()),
                _ => {}
            }
        }
        if !uses.contains("prompt") {
            return Err("it never uses {{prompt}}, so every job's prompt would be ignored".into());
        }
        let outputs = if saves.is_empty() { previews } else { saves };
        if outputs.is_empty() {
            return Err("it has no SaveImage or PreviewImage node, so it would make no images".into());
        }
        Ok(Workflow { nodes, uses, outputs })
    }

    /// Whether the workflow uses `{{name}}`.
    pub fn uses(&self, name: &str) -> bool {
        self.uses.contains(name)
    }

    /// The node ids whose images are returned, in order.
    pub fn output_nodes(&self) -> &[String] {
        &self.outputs
    }

    /// The workflow with `job`'s values in place of the placeholders; `init_image` is the name
    /// the upload got. Fails (in words for the user) where the workflow and the job do not fit.
    pub fn fill(&self, job: &BackendJob, init_image: Option<&str>) -> Result<Value, BackendError> {
        self.check(job)?;
        let values = Values::of(job, init_image);
        let mut nodes = self.nodes.clone();
        for node in nodes.values_mut() {
            if let Some(Value::Object(inputs)) = node.get_mut("inputs") {
                for value in inputs.values_mut() {
                    values.fill(value);
                }
            }
        }
        Ok(Value::Object(nodes))
    }

    /// Whether the workflow can run `job` at all (before anything is uploaded).
    fn check(&self, job: &BackendJob) -> Result<(), BackendError> {
        match (job.init_image.is_some(), self.uses("init_image")) {
            (true, false) => {
                return Err(BackendError::Failed(
                    "This server's ComfyUI workflow does not do image-to-image (it has no {{init_image}}), so it cannot \
                     start from an init image"
                        .into(),
                ));
            }
            (false, true) => {
                return Err(BackendError::Failed(
                    "This server's ComfyUI workflow does image-to-image only: it needs an init image".into(),
                ));
            }
            _ => {}
        }
        if self.uses("model") && job.model.is_none() {
            return Err(BackendError::Failed(
                "The model has no backend_model, and this server's ComfyUI workflow needs it to load the checkpoint"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The node id a link input (`["4", 0]`: node 4's first output) points to. ComfyUI takes every
/// list input as a link.
fn link_target(value: &Value) -> Option<&str> {
    match value.as_array().map(Vec::as_slice) {
        Some([Value::String(node), slot]) if slot.is_u64() => Some(node),
        _ => None,
    }
}

/// The `{{name}}`s in `text`, with their byte ranges. Only identifier-like names count, so other
/// uses of braces stay text.
fn placeholders_in(text: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("{{").map(|at| from + at) {
        let name_start = start + 2;
        let Some(end) = text[name_start..].find("}}").map(|at| name_start + at) else { break };
        let name = &text[name_start..end];
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            found.push((start..end + 2, name));
            from = end + 2;
        } else {
            from = start + 1;
        }
    }
    found
}

/// Checks the placeholders of one input value (strings, also inside lists and objects) and adds
/// them to `uses`.
fn check_placeholders(value: &Value, uses: &mut BTreeSet<&'static str>) -> Result<(), String> {
    match value {
        Value::String(text) => {
            let found = placeholders_in(text);
            let whole = found.len() == 1 && found[0].0 == (0..text.len());
            for (_, name) in found {
                let Some(known) = PLACEHOLDERS.iter().find(|p| **p == name) else {
                    let all: Vec<String> = PLACEHOLDERS.iter().map(|p| format!("{{{{{p}}}}}")).collect();
                    return Err(format!("{{{{{name}}}}} is not a placeholder (they are {})", all.join(", ")));
                };
                if !whole && !TEXT_PLACEHOLDERS.contains(known) {
                    return Err(format!(
                        "{{{{{name}}}}} must be the whole value; only {{{{prompt}}}} and {{{{negative_prompt}}}} can be \
                         part of a longer text"
                    ));
                }
                uses.insert(known);
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|item| check_placeholders(item, uses)),
        Value::Object(map) => map.values().try_for_each(|item| check_placeholders(item, uses)),
        _ => Ok(()),
    }
}

/// One job's value of every placeholder.
struct Values {
    prompt: String,
    negative_prompt: String,
    typed: HashMap<&'static str, Value>,
}

impl Values {
    fn of(job: &BackendJob, init_image: Option<&str>) -> Values {
        let (sampler_name, scheduler) = sampler(Scheduler::of(&job.scheduler));
        let denoise = if job.init_image.is_some() { job.denoising_strength() } else { 1.0 };
        let mut typed = HashMap::from([
            ("prompt", json!(job.prompt)),
            ("negative_prompt", json!(job.negative_prompt)),
            ("seed", json!(job.seed)),
            ("width", json!(job.width)),
            ("height", json!(job.height)),
            ("steps", json!(job.steps)),
            ("cfg", json!(job.guidance)),
            ("sampler_name", json!(sampler_name)),
            ("scheduler", json!(scheduler)),
            ("batch_size", json!(job.num_images)),
            ("denoise", json!(denoise)),
        ]);
        if let Some(model) = &job.model {
            typed.insert("model", json!(model));
        }
        if let Some(name) = init_image {
            typed.insert("init_image", json!(name));
        }
        Values { prompt: job.prompt.clone(), negative_prompt: job.negative_prompt.clone(), typed }
    }

    fn fill(&self, value: &mut Value) {
        match value {
            Value::String(text) => {
                let found = placeholders_in(text);
                if found.is_empty() {
                    return;
                }
                if found.len() == 1 && found[0].0 == (0..text.len()) {
                    if let Some(typed) = self.typed.get(found[0].1) {
                        *value = typed.clone();
                    }
                    return;
                }
                // Text placeholders inside a longer text, in one pass (a prompt that itself holds
                // `{{negative_prompt}}` stays as written).
                let mut out = String::with_capacity(text.len() + self.prompt.len());
                let mut last = 0;
                for (range, name) in found {
                    out.push_str(&text[last..range.start]);
                    match name {
                        "prompt" => out.push_str(&self.prompt),
                        "negative_prompt" => out.push_str(&self.negative_prompt),
                        _ => out.push_str(&text[range.clone()]),
                    }
                    last = range.end;
                }
                out.push_str(&text[last..]);
                *text = out;
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.fill(item)),
            Value::Object(map) => map.values_mut().for_each(|item| self.fill(item)),
            _ => {}
        }
    }
}

/// An image in a history entry's outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub filename: String,
    pub subfolder: String,
    pub kind: String,
}

/// What a finished history entry says: the images of the workflow's output nodes, in order, or
/// why the prompt failed (in words for the user).
pub fn finished(entry: &Value, workflow: &Workflow) -> Result<Vec<ImageRef>, BackendError> {
    if entry["status"]["status_str"].as_str() == Some("error") {
        return Err(BackendError::Failed(execution_failure(&entry["status"]["messages"])));
    }
    let mut images = Vec::new();
    for node in &workflow.outputs {
        let Some(list) = entry["outputs"][node]["images"].as_array() else { continue };
        for image in list {
            let Some(filename) = image["filename"].as_str() else { continue };
            images.push(ImageRef {
                filename: filename.to_string(),
                subfolder: image["subfolder"].as_str().unwrap_or_default().to_string(),
                kind: image["type"].as_str().unwrap_or("output").to_string(),
            });
        }
    }
    Ok(images)
}

/// Why a prompt whose status is `error` failed, from its status messages
/// (`[["execution_error", {node_id, node_type, exception_message, ...}], ...]`).
fn execution_failure(messages: &Value) -> String {
    let messages = messages.as_array().map(Vec::as_slice).unwrap_or_default();
    let event = |name: &str| {
        messages.iter().find_map(|message| match message.as_array().map(Vec::as_slice) {
            Some([Value::String(event), data]) if event == name => Some(data),
            _ => None,
        })
    };
    if let Some(error) = event("execution_error") {
        let message = error["exception_message"].as_str().map(one_line).filter(|m| !m.is_empty());
        let message = message.or_else(|| error["exception_type"].as_str().map(one_line));
        return format!(
            "ComfyUI failed at {}: {}",
            node_name(&error["node_id"], &error["node_type"]),
            shorten(message.as_deref().unwrap_or("no message"), 300)
        );
    }
    if let Some(interrupted) = event("execution_interrupted") {
        return format!(
            "The job was interrupted on ComfyUI at {}",
            node_name(&interrupted["node_id"], &interrupted["node_type"])
        );
    }
    "ComfyUI could not finish the workflow (it reported an error without saying which)".into()
}

/// Why ComfyUI refused a prompt (`POST /prompt` answered 400 with `error` and `node_errors`).
pub fn rejection(body: &[u8]) -> String {
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return format!("ComfyUI refused the workflow: {}", error_message(body));
    };
    let mut problems = Vec::new();
    if let Some(nodes) = answer["node_errors"].as_object() {
        for (id, node) in nodes {
            let errors: Vec<String> = node["errors"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(described)
                .filter(|text| !text.is_empty())
                .collect();
            let what = if errors.is_empty() { "invalid".to_string() } else { errors.join("; ") };
            problems.push(format!("{}: {what}", node_name(&json!(id), &node["class_type"])));
        }
    }
    if problems.is_empty() {
        let error = &answer["error"];
        let text = match error {
            Value::String(text) => one_line(text),
            _ => described(error),
        };
        problems.push(if text.is_empty() { error_message(body) } else { text });
    }
    shorten(&format!("ComfyUI refused the workflow: {}", problems.join("; ")), 500)
}

/// ComfyUI's `{type, message, details}` error in words.
fn described(error: &Value) -> String {
    let message = error["message"].as_str().map(one_line).unwrap_or_default();
    let details = error["details"].as_str().map(one_line).unwrap_or_default();
    match (message.is_empty(), details.is_empty()) {
        (false, false) => format!("{message}: {}", shorten(&details, 200)),
        (false, true) => message,
        (true, false) => shorten(&details, 200),
        (true, true) => String::new(),
    }
}

/// "node 3 (KSampler)".
fn node_name(id: &Value, class: &Value) -> String {
    let id = match id {
        Value::String(id) => id.clone(),
        Value::Null => "an unnamed node".into(),
        other => other.to_string(),
    };
    match class.as_str() {
        Some(class) => format!("node {id} ({class})"),
        None => format!("node {id}"),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The file name an init image is uploaded as: one per job (a retry overwrites its own).
fn upload_name(job: &BackendJob, bytes: &[u8]) -> (String, &'static str) {
    let id: String = job.id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    let (extension, mime) = match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => ("png", "image/png"),
        Ok(image::ImageFormat::WebP) => ("webp", "image/webp"),
        _ => ("jpg", "image/jpeg"),
    };
    (format!("easel-{id}.{extension}"), mime)
}

pub struct ComfyUi {
    http: Http,
    workflow: Workflow,
    /// The prompt id of each job this adapter queued and has not seen end, by job id: what a
    /// cancel deletes or interrupts.
    prompts: Mutex<HashMap<String, String>>,
}

impl ComfyUi {
    pub fn new(http: Http, workflow: Workflow) -> ComfyUi {
        ComfyUi { http, workflow, prompts: Mutex::new(HashMap::new()) }
    }

    fn remember(&self, job: &BackendJob, prompt_id: &str) {
        self.prompts.lock().unwrap_or_else(|e| e.into_inner()).insert(job.id.clone(), prompt_id.to_string());
    }

    /// Forgets `job`'s prompt if it is still `prompt_id`; returns it.
    fn forget(&self, job: &BackendJob, prompt_id: Option<&str>) -> Option<String> {
        let mut prompts = self.prompts.lock().unwrap_or_else(|e| e.into_inner());
        match (prompts.get(&job.id), prompt_id) {
            (Some(known), Some(expected)) if known != expected => None,
            _ => prompts.remove(&job.id),
        }
    }

    /// Uploads the init image; returns the name a `LoadImage` node takes (`subfolder/name`).
    async fn upload(&self, job: &BackendJob, bytes: &Bytes) -> Result<String, BackendError> {
        let (filename, mime) = upload_name(job, bytes);
        let part = reqwest::multipart::Part::bytes(bytes.to_vec())
            .file_name(filename)
            .mime_str(mime)
            .map_err(|e| BackendError::Failed(format!("cannot upload the init image: {e}")))?;
        let form = reqwest::multipart::Form::new().part("image", part).text("overwrite", "true");
        let request = self.http.post("upload/image").multipart(form).timeout(LONG_REQUEST);
        let answer = self.http.send_json(request).await?;
        let name = answer["name"].as_str().ok_or_else(|| self.http.malformed("an upload answer without a name"))?;
        Ok(match answer["subfolder"].as_str().unwrap_or_default() {
            "" => name.to_string(),
            subfolder => format!("{subfolder}/{name}"),
        })
    }

    /// Queues the filled workflow; returns its prompt id.
    async fn submit(&self, job: &BackendJob, prompt: Value) -> Result<String, BackendError> {
        // ComfyUI takes the prompt id from the request where it can (newer versions), so a cancel
        // that comes while the request is on its way still finds it; older versions pick their
        // own and say which in the answer.
        let proposed = uuid::Uuid::new_v4().to_string();
        self.remember(job, &proposed);
        let body = json!({ "prompt": prompt, "client_id": job.id, "prompt_id": proposed });
        let request = self.http.post("prompt").json(&body).timeout(LONG_REQUEST);
        let answer = match self.exchange(request).await {
            Ok(answer) => answer,
            Err(e) => {
                self.forget(job, Some(&proposed));
                return Err(e);
            }
        };
        let Some(prompt_id) = answer["prompt_id"].as_str().filter(|id| !id.is_empty()) else {
            self.forget(job, Some(&proposed));
            return Err(self.http.malformed("a /prompt answer without a prompt_id"));
        };
        if answer["node_errors"].as_object().is_some_and(|errors| !errors.is_empty()) {
            // Some outputs failed validation and will not run; the others do.
            let reason = rejection(answer.to_string().as_bytes());
            tracing::warn!(backend = self.http.name, %reason, "ComfyUI queued the workflow but refused some of its outputs");
        }
        self.remember(job, prompt_id);
        Ok(prompt_id.to_string())
    }

    /// `POST /prompt`: a 400 is ComfyUI refusing the workflow, worded from its node errors.
    async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<Value, BackendError> {
        let (status, body) = self.http.fetch(request).await?;
        if status.as_u16() == 400 {
            return Err(BackendError::Failed(rejection(&body)));
        }
        let body = self.http.judge(status, body)?;
        serde_json::from_slice(&body).map_err(|_| self.http.malformed("a /prompt answer that is not JSON"))
    }

    /// The prompt's history entry, once it has one.
    async fn history(&self, prompt_id: &str) -> Result<Option<Value>, BackendError> {
        let request = self.http.get(&format!("history/{prompt_id}")).timeout(SHORT_REQUEST);
        let answer = self.http.send_json(request).await?;
        let Value::Object(mut entries) = answer else {
            return Err(self.http.malformed("a /history answer that is not an object"));
        };
        Ok(entries.remove(prompt_id))
    }

    /// Whether the prompt is running (`Some(true)`), waiting (`Some(false)`) or in neither list.
    async fn queued(&self, prompt_id: &str) -> Result<Option<bool>, BackendError> {
        let answer = self.http.send_json(self.http.get("queue").timeout(SHORT_REQUEST)).await?;
        // Queue items are `[number, prompt_id, prompt, extra_data, outputs_to_execute, ...]`.
        let holds = |list: &str| {
            answer[list].as_array().is_some_and(|items| items.iter().any(|item| item[1].as_str() == Some(prompt_id)))
        };
        if !answer["queue_running"].is_array() {
            return Err(self.http.malformed("a /queue answer without queue_running"));
        }
        Ok(if holds("queue_running") {
            Some(true)
        } else if holds("queue_pending") {
            Some(false)
        } else {
            None
        })
    }

    /// Waits for the prompt's history entry.
    async fn wait(&self, prompt_id: &str) -> Result<Value, BackendError> {
        let mut failing_since: Option<Instant> = None;
        let mut next_queue_check = Instant::now() + QUEUE_CHECK_EVERY;
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            match self.history(prompt_id).await {
                Ok(Some(entry)) => return Ok(entry),
                Ok(None) => failing_since = None,
                // A history request cannot fail because of the job: it is the server's trouble,
                // and a short one is waited out.
                Err(BackendError::Unavailable(reason) | BackendError::Failed(reason)) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= POLL_FAILURES_FOR {
                        return Err(BackendError::Unavailable(reason));
                    }
                    continue;
                }
            }
            if Instant::now() >= next_queue_check {
                next_queue_check = Instant::now() + QUEUE_CHECK_EVERY;
                if let Ok(None) = self.queued(prompt_id).await {
                    // It may have ended between the two requests.
                    if let Some(entry) = self.history(prompt_id).await? {
                        return Ok(entry);
                    }
                    return Err(BackendError::Unavailable(format!(
                        "{} lost the job: it is neither queued, running nor finished there (was ComfyUI restarted?)",
                        self.http.name
                    )));
                }
            }
        }
    }

    async fn view(&self, image: &ImageRef) -> Result<Bytes, BackendError> {
        let query = [("filename", &image.filename), ("subfolder", &image.subfolder), ("type", &image.kind)];
        let bytes = self.http.send(self.http.get("view").query(&query).timeout(LONG_REQUEST)).await?;
        if image::guess_format(&bytes).is_err() {
            return Err(self.http.malformed(format!("{} is not an image", image.filename)));
        }
        Ok(bytes)
    }

    /// Runs the job once its prompt is queued.
    async fn run(&self, job: &BackendJob, prompt_id: &str) -> Result<Vec<BackendImage>, BackendError> {
        let entry = self.wait(prompt_id).await?;
        let images = finished(&entry, &self.workflow)?;
        let wanted = job.num_images as usize;
        if images.len() < wanted {
            let hint =
                if self.workflow.uses("batch_size") { "" } else { " (the workflow does not use {{batch_size}})" };
            return Err(BackendError::Failed(format!(
                "ComfyUI made {} image{} where {wanted} {} asked for{hint}",
                images.len(),
                if images.len() == 1 { "" } else { "s" },
                if wanted == 1 { "was" } else { "were" },
            )));
        }
        let mut out = Vec::with_capacity(wanted);
        for (index, image) in images.iter().take(wanted).enumerate() {
            // A batch shares one seed: ComfyUI draws the whole batch's noise from it, so only the
            // first image is what that seed alone makes; the others have no seed of their own.
            let seed = (index == 0 && self.workflow.uses("seed")).then_some(job.seed);
            out.push(BackendImage { bytes: self.view(image).await?, seed });
        }
        Ok(out)
    }

    /// Deletes the prompt from the queue, and interrupts it if it is running.
    async fn stop(&self, prompt_id: &str) {
        let delete = self.http.post("queue").json(&json!({ "delete": [prompt_id] })).timeout(SHORT_REQUEST);
        if let Err(e) = self.http.send(delete).await {
            tracing::warn!(backend = self.http.name, error.message = %e, "cannot delete the job from ComfyUI's queue");
        }
        // Checked after the delete: a prompt that started meanwhile is running now.
        match self.queued(prompt_id).await {
            Ok(Some(true)) => {
                // Newer ComfyUI interrupts only this prompt; older ones ignore the body and
                // interrupt whatever runs, which was this prompt a moment ago.
                let interrupt =
                    self.http.post("interrupt").json(&json!({ "prompt_id": prompt_id })).timeout(SHORT_REQUEST);
                if let Err(e) = self.http.send(interrupt).await {
                    tracing::warn!(backend = self.http.name, error.message = %e, "cannot interrupt the job on ComfyUI");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(backend = self.http.name, error.message = %e, "cannot tell whether the job runs on ComfyUI")
            }
        }
    }
}

#[async_trait]
impl Adapter for ComfyUi {
    async fn health(&self) -> Result<(), BackendError> {
        let stats = self.http.send_json(self.http.get("system_stats").timeout(SHORT_REQUEST)).await?;
        if stats.get("system").is_none() && stats.get("devices").is_none() {
            return Err(self.http.malformed("/system_stats has neither system nor devices"));
        }
        Ok(())
    }

    async fn generate(&self, job: &BackendJob) -> Result<Vec<BackendImage>, BackendError> {
        self.workflow.check(job)?;
        let init_image = match &job.init_image {
            Some(bytes) => Some(self.upload(job, bytes).await?),
            None => None,
        };
        let prompt = self.workflow.fill(job, init_image.as_deref())?;
        let prompt_id = self.submit(job, prompt).await?;
        let result = self.run(job, &prompt_id).await;
        self.forget(job, Some(&prompt_id));
        if let Err(BackendError::Unavailable(_)) = &result {
            // The job is about to run elsewhere: do not leave it queued here.
            self.stop(&prompt_id).await;
        }
        result
    }

    async fn cancel(&self, job: &BackendJob) {
        if let Some(prompt_id) = self.forget(job, None) {
            self.stop(&prompt_id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TXT2IMG: &str = include_str!("../../../docs/comfyui-workflow.example.json");
    const IMG2IMG: &str = include_str!("../../../docs/comfyui-img2img.example.json");

    fn job() -> BackendJob {
        BackendJob {
            id: "gen-1".into(),
            model: Some("sd_xl_base_1.0.safetensors".into()),
            prompt: "a lighthouse".into(),
            negative_prompt: "blurry".into(),
            width: 832,
            height: 1216,
            num_images: 2,
            seed: 42,
            steps: 30,
            guidance: 7.5,
            scheduler: "DPM_SOLVER".into(),
            init_image: None,
            init_strength: None,
            mask: None,
            controls: Vec::new(),
        }
    }

    fn workflow(nodes: Value) -> Result<Workflow, String> {
        Workflow::parse(&nodes.to_string())
    }

    fn minimal(text: &str) -> Value {
        json!({
            "1": {"class_type": "CLIPTextEncode", "inputs": {"text": text}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "easel"}},
        })
    }

    #[test]
    fn the_example_workflows_parse() {
        let txt2img = Workflow::parse(TXT2IMG).unwrap();
        for name in PLACEHOLDERS.iter().filter(|p| !matches!(**p, "init_image" | "denoise")) {
            assert!(txt2img.uses(name), "the txt2img example uses {{{{{name}}}}}");
        }
        assert!(!txt2img.uses("init_image"));
        let img2img = Workflow::parse(IMG2IMG).unwrap();
        assert!(img2img.uses("init_image") && img2img.uses("denoise") && img2img.uses("model"));
        assert_eq!(txt2img.output_nodes(), ["9"]);
    }

    #[test]
    fn placeholders_become_values_of_the_right_type() {
        let filled = Workflow::parse(TXT2IMG).unwrap().fill(&job(), None).unwrap();
        let sampler = &filled["3"]["inputs"];
        assert_eq!(sampler["seed"], json!(42));
        assert_eq!(sampler["steps"], json!(30));
        assert_eq!(sampler["cfg"], json!(7.5));
        assert!(sampler["cfg"].is_f64());
        assert_eq!(sampler["sampler_name"], "dpmpp_2m");
        assert_eq!(sampler["scheduler"], "karras");
        assert_eq!(sampler["model"], json!(["4", 0]), "links stay links");
        let latent = &filled["5"]["inputs"];
        assert_eq!((latent["width"].as_u64(), latent["height"].as_u64()), (Some(832), Some(1216)));
        assert_eq!(latent["batch_size"], json!(2));
        assert_eq!(filled["6"]["inputs"]["text"], "a lighthouse");
        assert_eq!(filled["7"]["inputs"]["text"], "blurry");
        assert_eq!(filled["4"]["inputs"]["ckpt_name"], "sd_xl_base_1.0.safetensors");
        assert!(!filled.to_string().contains("{{"), "{filled}");

        let mut img2img = job();
        img2img.init_image = Some(Bytes::from_static(b"jpeg"));
        img2img.init_strength = Some(0.25);
        let filled = Workflow::parse(IMG2IMG).unwrap().fill(&img2img, Some("easel-gen-1.jpg")).unwrap();
        assert_eq!(filled["10"]["inputs"]["image"], "easel-gen-1.jpg");
        assert_eq!(filled["3"]["inputs"]["denoise"], json!(0.75));
    }

    #[test]
    fn prompts_fill_inside_longer_text_in_one_pass() {
        let flow = workflow(minimal("masterpiece, {{prompt}}; not {{negative_prompt}}")).unwrap();
        let mut tricky = job();
        tricky.prompt = "a {{negative_prompt}} cat".into();
        let filled = flow.fill(&tricky, None).unwrap();
        assert_eq!(filled["1"]["inputs"]["text"], "masterpiece, a {{negative_prompt}} cat; not blurry");
        let braces = workflow(minimal("{{{prompt}}} {not a placeholder}} {{ spaced }}")).unwrap();
        assert_eq!(
            braces.fill(&job(), None).unwrap()["1"]["inputs"]["text"],
            "{a lighthouse} {not a placeholder}} {{ spaced }}"
        );
    }

    #[test]
    fn bad_workflows_are_refused_in_a_sentence() {
        let unknown = workflow(json!({
            "1": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}", "style": "{{styel}}"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
        }))
        .unwrap_err();
        assert!(
            unknown.starts_with("node 1 (CLIPTextEncode), input style: {{styel}} is not a placeholder"),
            "{unknown}"
        );
        let embedded = workflow(minimal("{{prompt}} at seed {{seed}}")).unwrap_err();
        assert!(embedded.contains("{{seed}} must be the whole value"), "{embedded}");
        let no_output =
            workflow(json!({"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}"}}})).unwrap_err();
        assert!(no_output.contains("no SaveImage or PreviewImage"), "{no_output}");
        let no_prompt = workflow(minimal("a fixed prompt")).unwrap_err();
        assert!(no_prompt.contains("never uses {{prompt}}"), "{no_prompt}");
        let dangling = workflow(json!({
            "1": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}", "clip": ["4", 1]}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
        }))
        .unwrap_err();
        assert_eq!(dangling, "node 1 (CLIPTextEncode), input clip: links to node 4, which is not in the workflow");
        let no_class = workflow(json!({"_comment": "x", "2": {"class_type": "SaveImage", "inputs": {}}})).unwrap_err();
        assert!(no_class.starts_with("node _comment has no class_type"), "{no_class}");
        let ui = workflow(json!({"nodes": [], "links": [], "version": 0.4})).unwrap_err();
        assert!(ui.contains("UI format"), "{ui}");
        assert!(Workflow::parse("[1, 2]").unwrap_err().contains("JSON object of nodes"));
        assert!(Workflow::parse("{").unwrap_err().starts_with("it is not valid JSON"));
    }

    #[test]
    fn jobs_the_workflow_cannot_run_fail_in_words() {
        let txt2img = Workflow::parse(TXT2IMG).unwrap();
        let mut img2img = job();
        img2img.init_image = Some(Bytes::from_static(b"jpeg"));
        let Err(BackendError::Failed(reason)) = txt2img.fill(&img2img, None) else { panic!("must fail") };
        assert!(reason.contains("does not do image-to-image"), "{reason}");
        let Err(BackendError::Failed(reason)) = Workflow::parse(IMG2IMG).unwrap().fill(&job(), None) else {
            panic!("must fail")
        };
        assert!(reason.contains("needs an init image"), "{reason}");
        let mut no_model = job();
        no_model.model = None;
        let Err(BackendError::Failed(reason)) = txt2img.fill(&no_model, None) else { panic!("must fail") };
        assert!(reason.contains("backend_model"), "{reason}");
        // A workflow with a fixed checkpoint needs no backend_model.
        assert!(workflow(minimal("{{prompt}}")).unwrap().fill(&no_model, None).is_ok());
    }

    #[test]
    fn leonardo_schedulers_map_to_ksampler_names() {
        assert_eq!(sampler(Scheduler::of("EULER_DISCRETE")), ("euler", "normal"));
        assert_eq!(sampler(Scheduler::of("EULER_ANCESTRAL_DISCRETE")), ("euler_ancestral", "normal"));
        assert_eq!(sampler(Scheduler::of("KLMS")), ("lms", "normal"));
        assert_eq!(sampler(Scheduler::of("DDIM")), ("ddim", "ddim_uniform"));
        assert_eq!(sampler(Scheduler::of("DPM_SOLVER")), ("dpmpp_2m", "karras"));
        assert_eq!(sampler(Scheduler::of("PNDM")), ("ipndm", "normal"));
        assert_eq!(sampler(Scheduler::of("LEONARDO")), ("euler", "normal"));
    }

    #[test]
    fn history_entries_give_images_or_reasons() {
        let flow = Workflow::parse(TXT2IMG).unwrap();
        let done = json!({
            "outputs": {"9": {"images": [
                {"filename": "easel_00001_.png", "subfolder": "", "type": "output"},
                {"filename": "easel_00002_.png", "subfolder": "x", "type": "output"},
            ]}},
            "status": {"status_str": "success", "completed": true, "messages": []},
        });
        let images = finished(&done, &flow).unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!(
            images[1],
            ImageRef { filename: "easel_00002_.png".into(), subfolder: "x".into(), kind: "output".into() }
        );

        let failed = json!({
            "outputs": {},
            "status": {"status_str": "error", "completed": false, "messages": [
                ["execution_start", {"prompt_id": "p", "timestamp": 1}],
                ["execution_error", {"prompt_id": "p", "node_id": "3", "node_type": "KSampler",
                    "exception_message": "Allocation on device\nThis error means you ran out of memory on your GPU.",
                    "exception_type": "torch.OutOfMemoryError", "traceback": ["  File \"x.py\"\n"]}],
            ]},
        });
        let Err(BackendError::Failed(reason)) = finished(&failed, &flow) else { panic!("must fail") };
        assert_eq!(
            reason,
            "ComfyUI failed at node 3 (KSampler): Allocation on device This error means you ran out of memory on your GPU."
        );
        let interrupted = json!({"status": {"status_str": "error", "messages": [
            ["execution_interrupted", {"prompt_id": "p", "node_id": "3", "node_type": "KSampler", "executed": []}],
        ]}});
        let Err(BackendError::Failed(reason)) = finished(&interrupted, &flow) else { panic!("must fail") };
        assert_eq!(reason, "The job was interrupted on ComfyUI at node 3 (KSampler)");
    }

    #[test]
    fn refusals_name_the_node_and_the_problem() {
        let body = json!({
            "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                "details": "", "extra_info": {}},
            "node_errors": {"4": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                "details": "ckpt_name: 'nope.safetensors' not in ['a.safetensors']",
                "extra_info": {"input_name": "ckpt_name"}}], "dependent_outputs": ["9"],
                "class_type": "CheckpointLoaderSimple"}},
        });
        assert_eq!(
            rejection(body.to_string().as_bytes()),
            "ComfyUI refused the workflow: node 4 (CheckpointLoaderSimple): Value not in list: ckpt_name: \
             'nope.safetensors' not in ['a.safetensors']"
        );
        let no_outputs = json!({"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs",
            "details": "", "extra_info": {}}, "node_errors": []});
        assert_eq!(rejection(no_outputs.to_string().as_bytes()), "ComfyUI refused the workflow: Prompt has no outputs");
        assert_eq!(
            rejection(b"<html>oops</html>"),
            "ComfyUI refused the workflow: an HTML page instead of an API answer"
        );
    }
}
