//! Adapters to the inference servers teams already run: each maps one generation job
//! ([`BackendJob`], Leonardo's parameters) to the server's API and its answer back to images.
//! The dispatcher ([`super::dispatch`]) decides which server runs which job; an adapter only
//! speaks its protocol, and says whether a failure is the server's ([`BackendError::Unavailable`]:
//! the job goes to another server) or the job's ([`BackendError::Failed`]: the generation fails
//! with that reason).

pub mod cog;
pub mod comfyui;
pub mod openai;
pub mod sdapi;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{BackendConfig, BackendKind, SecretText};
use crate::setting::InvalidSetting;

/// One generation, as an adapter needs it.
#[derive(Clone, Debug)]
pub struct BackendJob {
    /// Stable across retries (the generation id): servers that take a client id get this one.
    pub id: String,
    /// `backend_model` of the model: the checkpoint or model name on the server, if set.
    pub model: Option<String>,
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub num_images: u32,
    /// The seed of the first image; image `i` uses `seed + i` where the server takes one seed
    /// per image.
    pub seed: u64,
    pub steps: u32,
    pub guidance: f64,
    /// Leonardo's scheduler name (`EULER_DISCRETE`, `DPM_SOLVER`, ...); see [`Scheduler`].
    pub scheduler: String,
    /// Image-to-image: the init image (JPEG) and how strongly it is kept (Leonardo's
    /// `init_strength`, 0.1 to 0.9; the denoising strength is `1 - init_strength`).
    pub init_image: Option<Bytes>,
    pub init_strength: Option<f64>,
    /// Inpainting: where to repaint the init image (PNG, white = repaint). Only `sdapi` takes
    /// it; requests with one are refused for models on other kinds.
    pub mask: Option<Bytes>,
    /// Controlnets and image prompts, as sd-webui-controlnet units. Only `sdapi` takes them;
    /// requests with them are refused for models on other kinds.
    pub controls: Vec<ControlUnit>,
}

/// One sd-webui-controlnet unit: a picture, and the module (preprocessor) and model that read it.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlUnit {
    /// As uploaded or generated (PNG, JPEG or WebP).
    pub image: Bytes,
    pub module: String,
    pub model: String,
    pub weight: f64,
    /// `Balanced`, `My prompt is more important` or `ControlNet is more important`.
    pub control_mode: &'static str,
}

/// One variation, as an adapter needs it.
#[derive(Clone, Debug)]
pub struct TransformJob {
    /// The variation's id.
    pub id: String,
    pub transform: crate::records::Transform,
    /// The picture to transform, as stored (JPEG, or the PNG of an earlier background removal).
    pub source: Bytes,
    /// The generation the image comes from, as a job of one image the size of the source (its
    /// prompt, model and seed), for transforms that paint (unzoom).
    pub generation: BackendJob,
}

/// Unzoom's `init_strength` on backends: the surroundings (a blurred stretch of the picture) are
/// mostly repainted (denoising strength 0.75).
pub const UNZOOM_KEEP: f64 = 0.25;

impl BackendJob {
    /// The denoising strength for image-to-image: how much of the init image is repainted.
    pub fn denoising_strength(&self) -> f64 {
        1.0 - self.init_strength.unwrap_or(0.5).clamp(0.0, 1.0)
    }
}

/// One picture a server made, in whatever format it sent (PNG, JPEG or WebP); the worker
/// converts it to the JPEG Easel stores.
#[derive(Clone, Debug)]
pub struct BackendImage {
    pub bytes: Bytes,
    /// The seed the server reports it used, where it reports one.
    pub seed: Option<u64>,
}

/// Why a job did not come back with images.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The server is not working (cannot connect, 502/503/504, an answer that is not its API):
    /// it leaves the rotation until its health check passes, and the job is tried again, on
    /// another server of the model where there is one.
    #[error("{0}")]
    Unavailable(String),
    /// The server refused or failed this job; the generation fails with this reason.
    #[error("{0}")]
    Failed(String),
}

/// The protocol of one kind of inference server.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// Checks that the server answers its API (a cheap request, no generation).
    async fn health(&self) -> Result<(), BackendError>;
    /// Runs `job` to its end and returns its `num_images` images.
    async fn generate(&self, job: &BackendJob) -> Result<Vec<BackendImage>, BackendError>;
    /// Stops `job` on the server, if it is still queued or running there (best effort: the job's
    /// `generate` future has been dropped or is about to be).
    async fn cancel(&self, job: &BackendJob);
    /// The variations it does ([`crate::records::Transform::name`]s); variations of its models'
    /// images with other transforms run on the built-in renderer.
    fn transforms(&self) -> &'static [&'static str] {
        &[]
    }
    /// Runs a variation (one of [`Adapter::transforms`]) and returns its picture.
    async fn transform(&self, job: &TransformJob) -> Result<BackendImage, BackendError> {
        Err(BackendError::Failed(format!("this backend does not do {} variations", job.transform.name())))
    }
}

/// Builds the adapter a `[[backends]]` entry asks for. `public_url` is where this Easel can be
/// reached (servers that call back, such as Cog, use it).
pub fn adapter(config: &BackendConfig) -> Result<Arc<dyn Adapter>, InvalidSetting> {
    let http = Http::new(config)?;
    Ok(match config.kind {
        BackendKind::Sdapi => Arc::new(sdapi::Sdapi::new(http, config.upscaler.clone(), config.rembg_model.clone())),
        BackendKind::Openai => Arc::new(openai::OpenAi::new(http, config.sd_cpp_extra_args)),
        BackendKind::Cog => Arc::new(cog::Cog::new(http)),
        BackendKind::Comfyui => {
            let path = config.workflow.as_ref().expect("validated: comfyui backends have a workflow");
            let setting = || format!("backends.{}.workflow", config.name);
            let text = std::fs::read_to_string(path).map_err(|e| {
                InvalidSetting::new(setting(), format!("cannot read {}: {e}", path.display())).caused_by(e)
            })?;
            let workflow = comfyui::Workflow::parse(&text)
                .map_err(|reason| InvalidSetting::new(setting(), format!("{}: {reason}", path.display())))?;
            Arc::new(comfyui::ComfyUi::new(http, workflow))
        }
    })
}

/// Leonardo's schedulers, for servers that name theirs differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduler {
    Klms,
    EulerAncestral,
    Euler,
    Ddim,
    DpmSolver,
    Pndm,
    /// `LEONARDO` and anything else: the server's default.
    Default,
}

impl Scheduler {
    pub fn of(leonardo: &str) -> Scheduler {
        match leonardo {
            "KLMS" => Scheduler::Klms,
            "EULER_ANCESTRAL_DISCRETE" => Scheduler::EulerAncestral,
            "EULER_DISCRETE" => Scheduler::Euler,
            "DDIM" => Scheduler::Ddim,
            "DPM_SOLVER" => Scheduler::DpmSolver,
            "PNDM" => Scheduler::Pndm,
            _ => Scheduler::Default,
        }
    }
}

/// The HTTP client of one backend: its base URL, credentials and extra headers, and the error
/// wording every adapter shares.
#[derive(Clone)]
pub struct Http {
    pub name: String,
    pub base: url::Url,
    pub client: reqwest::Client,
}

impl Http {
    pub fn new(config: &BackendConfig) -> Result<Http, InvalidSetting> {
        let settings = format!("backends.{}", config.name);
        Http::build(&config.name, &settings, &config.url, config.api_key.as_ref(), &config.headers)
    }

    /// The client of the server at `url` called `name` in messages; `settings` names the
    /// configuration section in errors.
    pub fn build(
        name: &str,
        settings: &str,
        url: &str,
        api_key: Option<&SecretText>,
        extra_headers: &BTreeMap<String, SecretText>,
    ) -> Result<Http, InvalidSetting> {
        let setting = |field: &str| format!("{settings}.{field}");
        let mut base = url::Url::parse(url)
            .map_err(|e| InvalidSetting::new(setting("url"), format!("not a URL: {e}")).caused_by(e))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut headers = HeaderMap::new();
        if let Some(key) = api_key {
            let value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                .map_err(|_| InvalidSetting::new(setting("api_key"), "is not valid in an HTTP header"))?;
            headers.insert(AUTHORIZATION, sensitive(value));
        }
        for (name, value) in extra_headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| InvalidSetting::new(setting("headers"), format!("{name:?} is not a header name")))?;
            let value = HeaderValue::from_str(value.expose())
                .map_err(|_| InvalidSetting::new(setting("headers"), format!("the value of {name} is not valid")))?;
            headers.insert(name, sensitive(value));
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("easel/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| InvalidSetting::new(setting("url"), format!("cannot build its HTTP client: {e}")))?;
        Ok(Http { name: name.to_string(), base, client })
    }

    /// `path` (relative, such as `sdapi/v1/txt2img`) under the base URL.
    pub fn url(&self, path: &str) -> url::Url {
        self.base.join(path.trim_start_matches('/')).unwrap_or_else(|_| self.base.clone())
    }

    /// Sends `request` and reads the whole answer, whatever its status.
    pub async fn fetch(&self, request: reqwest::RequestBuilder) -> Result<(StatusCode, Bytes), BackendError> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        Ok((status, body))
    }

    /// The body of a 2xx answer; any other status is an error worded from the server's own
    /// message: `Unavailable` where the answer is not this server's API (404, 405: the wrong URL
    /// or kind; 502-504: a proxy with nothing behind it), `Failed` otherwise.
    pub fn judge(&self, status: StatusCode, body: Bytes) -> Result<Bytes, BackendError> {
        if status.is_success() {
            return Ok(body);
        }
        let message = format!("{} answered {status}: {}", self.name, error_message(&body));
        if matches!(status.as_u16(), 404 | 405 | 502..=504) {
            Err(BackendError::Unavailable(message))
        } else {
            Err(BackendError::Failed(message))
        }
    }

    /// Sends `request` and reads the whole answer; a status outside 2xx is an error ([`Http::judge`]).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Bytes, BackendError> {
        let (status, body) = self.fetch(request).await?;
        self.judge(status, body)
    }

    /// Sends `request` and parses the answer as JSON.
    pub async fn send_json(&self, request: reqwest::RequestBuilder) -> Result<Value, BackendError> {
        let body = self.send(request).await?;
        self.parse_json(&body)
    }

    /// An answer's body as JSON; anything else means the server does not speak the protocol.
    pub fn parse_json(&self, body: &[u8]) -> Result<Value, BackendError> {
        serde_json::from_slice(body).map_err(|_| {
            BackendError::Unavailable(format!(
                "{} answered something that is not JSON: {}",
                self.name,
                error_message(body)
            ))
        })
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path))
    }

    /// The failure to reach the server, in words.
    pub fn unreachable(&self, error: &reqwest::Error) -> BackendError {
        let what = if error.is_timeout() {
            "did not answer in time".to_string()
        } else if error.is_connect() {
            format!("cannot be reached at {} ({})", self.base, root_cause(error))
        } else {
            format!("failed to answer: {}", root_cause(error))
        };
        BackendError::Unavailable(format!("{} {what}", self.name))
    }

    /// An answer that does not have the shape the protocol promises.
    pub fn malformed(&self, what: impl std::fmt::Display) -> BackendError {
        BackendError::Unavailable(format!("{} answered in an unexpected shape: {what}", self.name))
    }
}

fn sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// A server's error answer in words: the message of a JSON error (`error`, `detail`, `message`,
/// as the common servers word theirs), else the start of the text; never a raw dump.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<Value>(body)
        && let Some(message) = json_message(&json)
    {
        return shorten(&message, 300);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "no message".into();
    }
    if text.starts_with('<') {
        return "an HTML page instead of an API answer".into();
    }
    shorten(&text.split_whitespace().collect::<Vec<_>>().join(" "), 300)
}

fn json_message(json: &Value) -> Option<String> {
    match json {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
        Value::Object(map) => ["message", "detail", "error", "errors", "msg", "exception_message"]
            .iter()
            .find_map(|key| map.get(*key).and_then(json_message)),
        Value::Array(items) => {
            let messages: Vec<String> = items.iter().filter_map(json_message).collect();
            (!messages.is_empty()).then(|| messages.join("; "))
        }
        _ => None,
    }
}

/// At most `max` characters of `text` on one line, printable, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.chars().count() <= max {
        return clean;
    }
    let mut cut: String = clean.chars().take(max).collect();
    cut.push('…');
    cut
}

/// Decodes base64 image data, with or without a `data:image/...;base64,` prefix.
pub fn decode_base64_image(text: &str) -> Option<Bytes> {
    use base64::Engine;
    let data = match text.strip_prefix("data:") {
        Some(rest) => rest.split_once(',')?.1,
        None => text,
    };
    base64::engine::general_purpose::STANDARD.decode(data.trim()).ok().map(Bytes::from)
}

/// The seed written into a PNG's `parameters` text chunk (`..., Seed: 42, ...`), as AUTOMATIC1111
/// and stable-diffusion.cpp record their generation parameters.
pub fn png_parameters_seed(png: &[u8]) -> Option<u64> {
    let mut rest = png.strip_prefix(b"\x89PNG\r\n\x1a\n")?;
    while rest.len() >= 12 {
        let length = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
        let kind = &rest[4..8];
        let data = rest.get(8..8 + length)?;
        if kind == b"tEXt"
            && let Some(text) = data.strip_prefix(b"parameters\0")
        {
            let text = String::from_utf8_lossy(text);
            let seed = text.split([',', '\n']).find_map(|part| part.trim().strip_prefix("Seed:"))?;
            return seed.trim().parse().ok();
        }
        if kind == b"IDAT" || kind == b"IEND" {
            // sd.cpp and A1111 write their text before the image data; don't read further.
            if kind == b"IEND" {
                return None;
            }
        }
        rest = rest.get(12 + length..)?;
    }
    None
}

/// Base64 of `bytes` (for servers that take images inline).
pub fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_worded_not_dumped() {
        assert_eq!(error_message(br#"{"error":"model not loaded"}"#), "model not loaded");
        assert_eq!(error_message(br#"{"error":{"message":"bad size","type":"invalid_request_error"}}"#), "bad size");
        assert_eq!(
            error_message(br#"{"detail":[{"loc":["body","width"],"msg":"value is not a valid integer"}]}"#),
            "value is not a valid integer"
        );
        assert_eq!(error_message(b"<html><body>Bad Gateway</body></html>"), "an HTML page instead of an API answer");
        assert_eq!(error_message(b""), "no message");
        assert_eq!(error_message("x".repeat(400).as_bytes()).chars().count(), 301);
        assert_eq!(error_message(b"line one\n\tline two"), "line one line two");
    }

    #[test]
    fn seeds_are_read_from_png_parameters() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let text = b"parameters\0a cat\nNegative prompt: \nSteps: 2, CFG scale: 7.0, Seed: 4242, Size: 64x64";
        png.extend_from_slice(&(text.len() as u32).to_be_bytes());
        png.extend_from_slice(b"tEXt");
        png.extend_from_slice(text);
        png.extend_from_slice(&[0, 0, 0, 0]);
        png.extend_from_slice(&[0, 0, 0, 0]);
        png.extend_from_slice(b"IEND");
        png.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(png_parameters_seed(&png), Some(4242));
        assert_eq!(png_parameters_seed(b"not a png"), None);
        assert_eq!(png_parameters_seed(&png[..20]), None);
    }

    #[test]
    fn base64_images_decode_with_or_without_a_data_prefix() {
        assert_eq!(decode_base64_image("aGk=").unwrap().as_ref(), b"hi");
        assert_eq!(decode_base64_image("data:image/png;base64,aGk=").unwrap().as_ref(), b"hi");
        assert!(decode_base64_image("not base64!").is_none());
    }
}
