//! Configuration: built-in defaults, then an optional TOML file (`--config FILE`), then `EASEL_`
//! environment variables (`EASEL_LISTEN`, `EASEL_RENDER__WORKERS` for `[render] workers`, ...).
//! Everything is validated once, up front: a bad setting stops start-up with one line that names it.
//! `docs/configuration.md` documents every field; keep the two in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::models::ModelConfig;
use crate::setting::InvalidSetting;

/// The top-level keys, so that `EASEL_` variables that are not settings (say `EASEL_TEST_...`)
/// are ignored instead of rejected as unknown fields.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "public_url",
    "master_key",
    "shutdown_grace",
    "log",
    "log_format",
    "api",
    "render",
    "webhook",
    "database",
    "storage",
    "roles",
    "models",
    "backends",
    "metrics",
    "prompt_tools",
    "elements",
    "inspector",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Directory for the embedded database, the image files and the master key file.
    pub data_dir: PathBuf,
    /// `sqlite://PATH`; default: `easel.db` in `data_dir`.
    pub database_url: Option<String>,
    /// Base of the image URLs Easel hands out; default `http://<listen>`.
    pub public_url: Option<String>,
    /// Key that encrypts webhook secrets at rest: 32 bytes, base64. Default: a key file that Easel
    /// creates in `data_dir` (mode 0600) on first start.
    #[serde(skip_serializing)]
    pub master_key: Option<SecretText>,
    /// How long `serve` waits for in-flight work after SIGTERM / Ctrl-C.
    #[serde(with = "duration_text")]
    pub shutdown_grace: Duration,
    /// Log filter: a level (`info`) or per-target directives (`easel=debug,sqlx=warn`).
    pub log: String,
    /// `text` (for people) or `json` (one object per line, for log collectors).
    pub log_format: LogFormat,
    pub api: ApiConfig,
    pub render: RenderConfig,
    pub webhook: WebhookConfig,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    /// What `serve` runs on this node: `api`, `render`, `deliver` (all three by default).
    pub roles: Vec<Role>,
    /// Extra platform models (or overrides of built-in ones, by id).
    pub models: Vec<ModelConfig>,
    /// Inference servers that models may route their jobs to (`[[backends]]`).
    pub backends: Vec<BackendConfig>,
    pub metrics: MetricsConfig,
    pub prompt_tools: PromptToolsConfig,
    /// Elements (LoRAs) `GET /elements` lists (`[[elements]]`).
    pub elements: Vec<crate::models::ElementConfig>,
    pub inspector: InspectorConfig,
}

/// The request inspector: capture bins at `{public_url}/inspect/{id}` (`[inspector]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InspectorConfig {
    /// Serve bins (the REST routes and the capture URLs); off: both answer 404.
    pub enabled: bool,
    /// How long a bin lives after its creation; then it answers as missing and is purged.
    #[serde(with = "duration_text")]
    pub bin_ttl: Duration,
    /// Unexpired bins one user may have; creating one more is refused (409).
    pub max_bins_per_user: u32,
    /// Requests a bin keeps; past it the oldest are dropped.
    pub max_requests_per_bin: u32,
    /// Bytes of requests (bodies as stored, paths, headers) a bin keeps; past it the oldest are
    /// dropped (the newest request is always kept).
    pub max_bytes_per_bin: u64,
    /// How much of each request body is stored (the full size is recorded).
    pub body_cap: usize,
    /// The longest response delay a bin may be configured with.
    #[serde(with = "duration_text")]
    pub max_delay: Duration,
}

impl Default for InspectorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bin_ttl: Duration::from_secs(7 * 24 * 3600),
            max_bins_per_user: 20,
            max_requests_per_bin: 500,
            max_bytes_per_bin: 4 * 1024 * 1024,
            body_cap: 64 * 1024,
            max_delay: Duration::from_secs(60),
        }
    }
}

/// `POST /prompt/random` and `/prompt/improve`: built in, or through an OpenAI-compatible
/// chat-completions server (llama.cpp's `llama-server`, Ollama, vLLM, ...).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptToolsConfig {
    /// The server's OpenAI base URL (such as `http://127.0.0.1:8081/v1`): Easel POSTs to
    /// `{url}/chat/completions`. Unset: the built-in prompt tools.
    pub url: Option<String>,
    /// Sent as `model` (the server's model name; llama.cpp ignores it).
    pub model: Option<String>,
    /// Sent as a bearer token.
    #[serde(skip_serializing)]
    pub api_key: Option<SecretText>,
    /// How long one answer may take (default 60s).
    #[serde(with = "duration_text")]
    pub timeout: Duration,
}

impl Default for PromptToolsConfig {
    fn default() -> Self {
        Self { url: None, model: None, api_key: None, timeout: Duration::from_secs(60) }
    }
}

/// `GET /metrics` (Prometheus / OpenMetrics text).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` on the API's address.
    pub enabled: bool,
    /// When set, `/metrics` answers only requests with `authorization: Bearer <token>`.
    #[serde(skip_serializing)]
    pub token: Option<SecretText>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, token: None }
    }
}

/// An inference server (`[[backends]]`): where it is, what protocol it speaks, how many jobs it
/// runs at once. Models name backends in their `backends` list.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique; models refer to it, and logs, `/healthz` and `easel backends list` show it.
    pub name: String,
    pub kind: BackendKind,
    /// The server's base URL (`http://10.0.0.5:7860`); paths are appended to it.
    pub url: String,
    /// Jobs this server runs at once, counted across every node (one per GPU is typical).
    #[serde(default = "one")]
    pub max_concurrent: u32,
    /// One job, end to end; past it the job is cancelled on the server and FAILED.
    #[serde(default = "five_minutes", with = "duration_text")]
    pub timeout: Duration,
    /// Sent as `authorization: Bearer <api_key>` (OpenAI-compatible services, secured proxies).
    #[serde(default, skip_serializing)]
    pub api_key: Option<SecretText>,
    /// Extra request headers, such as a gateway's credentials.
    #[serde(default, skip_serializing)]
    pub headers: std::collections::BTreeMap<String, SecretText>,
    /// How often a healthy server is probed; an unhealthy one is probed sooner, backing off up
    /// to this.
    #[serde(default = "thirty_seconds", with = "duration_text")]
    pub health_interval: Duration,
    /// `comfyui`: the workflow in ComfyUI's API format (a JSON file) whose `{{placeholders}}` Easel
    /// fills in; see the README.
    #[serde(default)]
    pub workflow: Option<PathBuf>,
    /// Widths and heights of its models' generations must be multiples of this (8, 16, 32 or 64):
    /// requests with other sizes are refused with 400 instead of being silently changed by the
    /// server (stable-diffusion.cpp rounds sizes up to a multiple of 64).
    #[serde(default = "eight")]
    pub size_multiple: u32,
    /// `openai` only: the server is stable-diffusion.cpp's, which takes the seed, steps, guidance
    /// and negative prompt (that OpenAI's API has no fields for) in an `<sd_cpp_extra_args>` tag
    /// at the end of the prompt.
    #[serde(default)]
    pub sd_cpp_extra_args: bool,
    /// The variations the server does, by route name (`upscale`, `universal-upscaler`, `unzoom`,
    /// `nobg` on `sdapi`; `unzoom` on `openai`); variations of its models' images with other
    /// transforms run on the built-in renderer. Unset: on `sdapi` the three AUTOMATIC1111 does
    /// itself (`nobg` needs its rembg extension; `[]` for stable-diffusion.cpp), else none.
    #[serde(default)]
    pub variations: Option<Vec<String>>,
    /// `sdapi` only: the upscaler (`upscaler_1`) of `/sdapi/v1/extra-single-image` for upscales.
    #[serde(default = "default_upscaler")]
    pub upscaler: String,
    /// `sdapi` only: the model of the rembg extension (`/rembg`) for background removal.
    #[serde(default = "default_rembg_model")]
    pub rembg_model: String,
    /// `sdapi` only: Leonardo's controlnet `preprocessorId`s (as strings, TOML keys) to the
    /// sd-webui-controlnet `"module:model"` that serves each; other ids are refused with 400.
    #[serde(default)]
    pub controlnet_models: std::collections::BTreeMap<String, String>,
    /// `sdapi` only: the sd-webui-controlnet IP-Adapter unit (`"module:model"`) for `imagePrompts`;
    /// unset, image prompts are refused with 400.
    #[serde(default)]
    pub ip_adapter: Option<String>,
}

/// The variations a `[[backends]]` entry may list (`variations`), and their stored names.
pub const BACKEND_VARIATIONS: &[(&str, &str)] =
    &[("upscale", "UPSCALE"), ("universal-upscaler", "UNIVERSAL_UPSCALER"), ("unzoom", "UNZOOM"), ("nobg", "NOBG")];

impl BackendConfig {
    /// The transforms ([`crate::records::Transform::name`]) it runs (validated names).
    pub fn variation_transforms(&self) -> Vec<&'static str> {
        let default = ["upscale", "universal-upscaler", "unzoom"].map(String::from).to_vec();
        let listed = match (&self.variations, self.kind) {
            (Some(list), _) => list.clone(),
            (None, BackendKind::Sdapi) => default,
            (None, _) => Vec::new(),
        };
        BACKEND_VARIATIONS.iter().filter(|(name, _)| listed.iter().any(|l| l == name)).map(|(_, t)| *t).collect()
    }

    /// The `(module, model)` of sd-webui-controlnet that serves Leonardo's `preprocessor`.
    pub fn controlnet(&self, preprocessor: u32) -> Option<(&str, &str)> {
        let unit = self.controlnet_models.get(&preprocessor.to_string())?;
        control_unit(unit)
    }

    /// The `(module, model)` of the IP-Adapter unit, for image prompts.
    pub fn ip_adapter_unit(&self) -> Option<(&str, &str)> {
        self.ip_adapter.as_deref().and_then(control_unit)
    }
}

/// `"module:model"` split at its first colon, both parts non-empty.
fn control_unit(text: &str) -> Option<(&str, &str)> {
    let (module, model) = text.split_once(':')?;
    let (module, model) = (module.trim(), model.trim());
    (!module.is_empty() && !model.is_empty()).then_some((module, model))
}

fn default_upscaler() -> String {
    "R-ESRGAN 4x+".into()
}

fn default_rembg_model() -> String {
    "u2net".into()
}

/// The protocol an inference server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// AUTOMATIC1111's `/sdapi/v1/txt2img` and `/img2img` (Forge, SD.Next, stable-diffusion.cpp).
    Sdapi,
    /// OpenAI's `/v1/images/generations` and `/v1/images/edits`.
    Openai,
    /// A Cog predictor's `/predictions`.
    Cog,
    /// ComfyUI's `/prompt`, `/history`, `/view` and `/upload/image`.
    Comfyui,
}

impl BackendKind {
    /// The variations (`variations` names) a server of this kind can do.
    pub fn variations(self) -> &'static [&'static str] {
        match self {
            BackendKind::Sdapi => &["upscale", "universal-upscaler", "unzoom", "nobg"],
            BackendKind::Openai => &["unzoom"],
            BackendKind::Cog | BackendKind::Comfyui => &[],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Sdapi => "sdapi",
            BackendKind::Openai => "openai",
            BackendKind::Cog => "cog",
            BackendKind::Comfyui => "comfyui",
        }
    }
}

fn one() -> u32 {
    1
}

fn eight() -> u32 {
    8
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// `apiConcurrencySlots` given to new users: how many generations may be pending at once.
    pub default_concurrency_slots: u32,
    /// `Retry-After` (seconds) sent with a 429 when a user's slots are all taken.
    pub retry_after_seconds: u32,
    /// Largest request head (request line and headers); beyond it the answer is 431.
    pub max_header_bytes: usize,
    /// Most header fields one request may carry; beyond it the answer is 431.
    pub max_headers: usize,
    /// A connection that takes longer than this to send a request's headers, or that sits idle
    /// this long between requests, is closed.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Largest init image upload (`POST /init-image` policies).
    pub max_upload_bytes: u64,
    /// How long an init image upload policy stays valid.
    #[serde(with = "duration_text")]
    pub upload_expiry: Duration,
    /// How long a node may answer from memory for an API key it authenticated or read to build a
    /// callback: a key deleted on another node (or by `easel keys delete`) stops working here
    /// within this time; on the node that deleted it, at once. A webhook disabled or enabled
    /// elsewhere shows in callbacks finished here within it too. `0s` reads the database every time.
    #[serde(with = "duration_text")]
    pub auth_cache_ttl: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderConfig {
    /// Image generation backend. `builtin`: the deterministic renderer.
    pub backend: String,
    /// Extra time each job takes, to mimic a real inference server ("3s"). Does not use CPU.
    #[serde(with = "duration_text")]
    pub simulated_duration: Duration,
    /// Images rendered in parallel (CPU-bound work). Default: the number of CPU cores.
    pub workers: usize,
    /// Jobs held at once by this node (rendering or waiting out `simulated_duration`).
    pub max_jobs_in_flight: usize,
    /// How often idle workers look for jobs that no in-process signal announced.
    #[serde(with = "duration_text")]
    pub poll_interval: Duration,
    /// A claimed job that is not finished within this time is taken over by another worker.
    #[serde(with = "duration_text")]
    pub lease: Duration,
    /// Claims of one job before a failure of image storage (or a worker that keeps dying on it)
    /// makes it FAILED, with its failed callback.
    pub max_attempts: u32,
    /// Wait before trying a job again after image storage failed; doubled after each failure, up
    /// to `lease`.
    #[serde(with = "duration_text")]
    pub retry_backoff: Duration,
    /// A job of a model served by `[[backends]]` that has waited this long while none of the
    /// model's backends was available (all failing their health checks) is FAILED.
    #[serde(with = "duration_text")]
    pub no_backend_timeout: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Delay before each attempt: the first entry before the first attempt, and so on. A delivery
    /// whose last attempt fails is kept as `failed`.
    #[serde(with = "duration_list_text")]
    pub retry_schedule: Vec<Duration>,
    /// Each delay is moved by up to this fraction either way, so retries of many deliveries that
    /// failed together do not arrive together.
    pub retry_jitter: f64,
    /// A whole attempt (connect, TLS, request, response head and body) must finish within this.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Connecting (TCP and TLS) must finish within this.
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    /// Requests in flight at once, all receivers together.
    pub max_in_flight: usize,
    /// Requests in flight at once to one receiver (scheme, host and port), so a slow receiver
    /// never holds up the others.
    pub per_endpoint_in_flight: usize,
    /// How much of a response body is read; the first KiB is kept in the attempt log.
    pub max_response_bytes: usize,
    /// Longest `Retry-After` (from a 429 or 503) that is honoured.
    #[serde(with = "duration_text")]
    pub max_retry_after: Duration,
    /// PEM file of extra trusted root certificates, added to the built-in web PKI roots (for
    /// private CAs and tests).
    pub extra_ca_certs: Option<PathBuf>,
    /// Allow `http://` callback URLs: for local development only. Off by default.
    pub allow_http: bool,
    /// Networks callbacks may reach although they are private, loopback, link-local, ...
    /// (CIDR, such as "127.0.0.0/8"): for development and tests only.
    pub allow_private_networks: Vec<ipnet::IpNet>,
    /// Local addresses every callback connection leaves from, taken in turn; receivers can
    /// allowlist exactly these. Each must be assigned to this machine.
    pub egress_ips: Vec<std::net::IpAddr>,
    /// An HTTP CONNECT proxy for callbacks (`http://HOST:PORT`, credentials allowed). Easel still
    /// resolves and checks the destination and asks the proxy for the checked address.
    pub proxy_url: Option<ProxyUrl>,
    /// DNS servers (`IP:PORT`) for callback hosts; default: the system resolver.
    pub dns_servers: Vec<SocketAddr>,
    /// Deliveries claimed from the database at once.
    pub batch_size: u32,
    /// How often the engine looks for due deliveries that no in-process signal announced.
    #[serde(with = "duration_text")]
    pub poll_interval: Duration,
    /// A claimed delivery whose attempt is not recorded within this time is claimed again.
    #[serde(with = "duration_text")]
    pub lease: Duration,
    /// A key's webhook whose every attempt has failed for this long is disabled: its deliveries
    /// are held until it is re-enabled (`easel keys enable-webhook`, `POST /webhook/enable`).
    /// `0s`: never.
    #[serde(with = "duration_text")]
    pub disable_after: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let schedule = ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h"];
        Self {
            retry_schedule: schedule.iter().map(|d| duration_text::parse(d).expect("valid")).collect(),
            retry_jitter: 0.1,
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            max_in_flight: 512,
            per_endpoint_in_flight: 32,
            max_response_bytes: 64 * 1024,
            max_retry_after: Duration::from_secs(3600),
            extra_ca_certs: None,
            allow_http: false,
            allow_private_networks: Vec::new(),
            egress_ips: Vec::new(),
            proxy_url: None,
            dns_servers: Vec::new(),
            batch_size: 1000,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(300),
            disable_after: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connections in the pool (PostgreSQL).
    pub max_connections: u32,
    /// Longest wait for a connection (and, at start, for the database to answer).
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { max_connections: 10, connect_timeout: Duration::from_secs(10) }
    }
}

/// Where image files live: the local directory `<data_dir>/images` by default, or an
/// S3-compatible bucket shared by every node.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `s3://BUCKET` or `s3://BUCKET/PREFIX`; unset: the local directory.
    pub url: Option<String>,
    /// The S3 endpoint, for S3-compatible services (MinIO, Ceph, R2, ...); default: AWS.
    pub endpoint: Option<String>,
    /// Default: `AWS_REGION`, else us-east-1.
    pub region: Option<String>,
    /// Default: `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Default: `AWS_SECRET_ACCESS_KEY`.
    #[serde(skip_serializing)]
    pub secret_access_key: Option<SecretText>,
    /// Allow an `http://` endpoint (a local S3-compatible server).
    pub allow_http: bool,
    /// Image URLs start with this (a CDN or the bucket's public address) instead of
    /// `{public_url}/cdn`; `/cdn/...` keeps serving the files either way.
    pub public_base_url: Option<String>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-11-29T09:00:00.000Z  INFO message key=value`, coloured on a terminal.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message` and the
    /// event's ids, such as `delivery.id`) and the enclosing spans.
    Json,
}

/// A part of `serve` that a node may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The HTTP API (REST v1 and image files).
    Api,
    /// Render workers.
    Render,
    /// The webhook delivery engine.
    Deliver,
}

impl Config {
    pub fn runs(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./easel-data"),
            database_url: None,
            public_url: None,
            master_key: None,
            shutdown_grace: Duration::from_secs(10),
            log: "info".into(),
            log_format: LogFormat::Text,
            api: ApiConfig::default(),
            render: RenderConfig::default(),
            webhook: WebhookConfig::default(),
            database: DatabaseConfig::default(),
            storage: StorageConfig::default(),
            roles: vec![Role::Api, Role::Render, Role::Deliver],
            models: Vec::new(),
            backends: Vec::new(),
            metrics: MetricsConfig::default(),
            prompt_tools: PromptToolsConfig::default(),
            elements: Vec::new(),
            inspector: InspectorConfig::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            default_concurrency_slots: 10,
            retry_after_seconds: 2,
            max_header_bytes: 16 * 1024,
            max_headers: 256,
            idle_timeout: Duration::from_secs(60),
            max_upload_bytes: 10 * 1024 * 1024,
            upload_expiry: Duration::from_secs(120),
            auth_cache_ttl: Duration::from_secs(1),
        }
    }
}

impl Default for RenderConfig {
    fn default() -> Self {
        Self {
            backend: "builtin".into(),
            simulated_duration: Duration::ZERO,
            workers: std::thread::available_parallelism().map(usize::from).unwrap_or(2),
            max_jobs_in_flight: 64,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(300),
            max_attempts: 8,
            retry_backoff: Duration::from_secs(5),
            no_backend_timeout: Duration::from_secs(600),
        }
    }
}

/// A secret setting: readable where it is used, `[redacted]` in `Debug` output and logs.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<InvalidSetting> for ConfigError {
    fn from(error: InvalidSetting) -> ConfigError {
        ConfigError(format!("`{}`: {}", error.setting, error.reason))
    }
}

/// A configuration problem, worded for the operator: it names the setting and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults, then the file (if any), then `EASEL_` environment variables; then validated.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed("EASEL_").split("__").filter(|key| {
            let top = key.as_str().split('.').next().unwrap_or("").to_ascii_lowercase();
            TOP_LEVEL_KEYS.contains(&top.as_str())
        }));
        let config: Config = figment.extract().map_err(|e| ConfigError(describe_figment_error(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot; each message names the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |setting: &str, message: String| Err(ConfigError(format!("`{setting}`: {message}")));
        if let Some(url) = &self.public_url
            && !is_http_url(url)
        {
            return fail("public_url", format!("{url:?} is not an absolute http(s) URL"));
        }
        DatabaseUrl::parse(&self.database_url())?;
        if self.database.max_connections == 0 {
            return fail("database.max_connections", "must be at least 1".into());
        }
        if let Some(url) = &self.storage.url
            && parse_s3_url(url).is_none()
        {
            return fail("storage.url", format!("{url:?} is not s3://BUCKET or s3://BUCKET/PREFIX"));
        }
        for (setting, value) in
            [("storage.endpoint", &self.storage.endpoint), ("storage.public_base_url", &self.storage.public_base_url)]
        {
            if let Some(url) = value
                && !is_http_url(url)
            {
                return fail(setting, format!("{url:?} is not an absolute http(s) URL"));
            }
        }
        crate::models::validate_elements(&self.elements)
            .map_err(|e| ConfigError(format!("`{}`: {}", e.setting, e.reason)))?;
        if let Some(url) = &self.prompt_tools.url
            && !is_http_url(url)
        {
            return fail("prompt_tools.url", format!("{url:?} is not an absolute http(s) URL"));
        }
        if self.api.max_upload_bytes == 0 || self.api.upload_expiry.is_zero() {
            return fail("api.max_upload_bytes", "uploads need a size limit and an expiry above zero".into());
        }
        let inspector = &self.inspector;
        if inspector.bin_ttl.is_zero() || inspector.max_bins_per_user == 0 || inspector.max_requests_per_bin == 0 {
            return fail("inspector", "bin_ttl, max_bins_per_user and max_requests_per_bin must be above zero".into());
        }
        if inspector.max_bytes_per_bin < inspector.body_cap as u64 {
            return fail("inspector.max_bytes_per_bin", "must be at least inspector.body_cap".into());
        }
        if self.roles.is_empty() {
            return fail("roles", "name at least one of api, render, deliver".into());
        }
        if let Some(Err(e)) = self.master_key.as_ref().map(|key| crate::secrets::MasterKey::from_base64(key.expose())) {
            return fail("master_key", e.to_string());
        }
        if self.api.max_body_bytes < 1024 {
            return fail("api.max_body_bytes", "must be at least 1024".into());
        }
        if self.api.max_header_bytes < 1024 {
            return fail("api.max_header_bytes", "must be at least 1024".into());
        }
        if self.api.max_headers == 0 {
            return fail("api.max_headers", "must be at least 1".into());
        }
        if self.api.idle_timeout < Duration::from_millis(100) {
            return fail("api.idle_timeout", "must be at least 100ms".into());
        }
        if self.api.default_concurrency_slots == 0 {
            return fail("api.default_concurrency_slots", "must be at least 1".into());
        }
        if self.render.backend != "builtin" {
            return fail(
                "render.backend",
                format!("{:?} is not a known backend (known: builtin)", self.render.backend),
            );
        }
        if self.render.workers == 0 {
            return fail("render.workers", "must be at least 1".into());
        }
        if self.render.max_jobs_in_flight == 0 {
            return fail("render.max_jobs_in_flight", "must be at least 1".into());
        }
        if self.render.poll_interval.is_zero() {
            return fail("render.poll_interval", "must be greater than zero".into());
        }
        if self.render.lease < Duration::from_secs(1) {
            return fail("render.lease", "must be at least 1s".into());
        }
        if self.render.max_attempts == 0 {
            return fail("render.max_attempts", "must be at least 1".into());
        }
        let webhook = &self.webhook;
        if webhook.retry_schedule.is_empty() {
            return fail("webhook.retry_schedule", "must hold at least one delay".into());
        }
        if !(0.0..=0.5).contains(&webhook.retry_jitter) {
            return fail("webhook.retry_jitter", "must be between 0 and 0.5".into());
        }
        if webhook.timeout < Duration::from_millis(10) {
            return fail("webhook.timeout", "must be at least 10ms".into());
        }
        if webhook.connect_timeout.is_zero() || webhook.connect_timeout > webhook.timeout {
            return fail("webhook.connect_timeout", "must be greater than zero and at most webhook.timeout".into());
        }
        if webhook.max_in_flight == 0 || webhook.per_endpoint_in_flight == 0 {
            return fail("webhook.max_in_flight", "and webhook.per_endpoint_in_flight must be at least 1".into());
        }
        if webhook.max_response_bytes < 1024 {
            return fail("webhook.max_response_bytes", "must be at least 1024".into());
        }
        if webhook.batch_size == 0 {
            return fail("webhook.batch_size", "must be at least 1".into());
        }
        if webhook.poll_interval.is_zero() {
            return fail("webhook.poll_interval", "must be greater than zero".into());
        }
        if webhook.lease < webhook.timeout * 2 {
            return fail("webhook.lease", "must be at least twice webhook.timeout".into());
        }
        self.validate_backends()?;
        crate::models::Catalogue::new(&self.models)?;
        Ok(())
    }

    fn validate_backends(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        for (index, backend) in self.backends.iter().enumerate() {
            let fail =
                |field: &str, message: String| Err(ConfigError(format!("`backends[{index}].{field}`: {message}")));
            let name = backend.name.trim();
            if name.is_empty()
                || name.len() > 64
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return fail("name", format!("{:?} must be 1 to 64 letters, digits, '-', '_' or '.'", backend.name));
            }
            if !names.insert(name) {
                return fail("name", format!("{name:?} names two backends"));
            }
            if !is_http_url(&backend.url) {
                return fail("url", format!("{:?} is not an absolute http(s) URL", redact_url(&backend.url)));
            }
            if !(1..=1024).contains(&backend.max_concurrent) {
                return fail("max_concurrent", "must be between 1 and 1024".into());
            }
            if backend.timeout < Duration::from_secs(1) {
                return fail("timeout", "must be at least 1s".into());
            }
            if backend.health_interval < Duration::from_millis(100) {
                return fail("health_interval", "must be at least 100ms".into());
            }
            for header in backend.headers.keys() {
                if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return fail("headers", format!("{header:?} is not a header name"));
                }
            }
            if ![8, 16, 32, 64].contains(&backend.size_multiple) {
                return fail("size_multiple", "must be 8, 16, 32 or 64".into());
            }
            if backend.sd_cpp_extra_args && backend.kind != BackendKind::Openai {
                return fail("sd_cpp_extra_args", "only openai backends take it".into());
            }
            let sdapi_only = [
                ("controlnet_models", !backend.controlnet_models.is_empty()),
                ("ip_adapter", backend.ip_adapter.is_some()),
            ];
            if let Some((field, _)) = sdapi_only.iter().find(|(_, set)| *set && backend.kind != BackendKind::Sdapi) {
                return fail(field, format!("only sdapi backends take it, not {}", backend.kind.as_str()));
            }
            for name in backend.variations.iter().flatten() {
                if !BACKEND_VARIATIONS.iter().any(|(known, _)| known == name) {
                    let known: Vec<&str> = BACKEND_VARIATIONS.iter().map(|(name, _)| *name).collect();
                    return fail("variations", format!("{name:?} is not one of {}", known.join(", ")));
                }
                let can = backend.kind.variations();
                if !can.contains(&name.as_str()) {
                    let what = if can.is_empty() { "none".to_string() } else { can.join(", ") };
                    return fail(
                        "variations",
                        format!("{} backends cannot do {name:?}; they do {what}", backend.kind.as_str()),
                    );
                }
            }
            if backend.upscaler.trim().is_empty() {
                return fail("upscaler", "must name an upscaler of the server".into());
            }
            if backend.rembg_model.trim().is_empty() {
                return fail("rembg_model", "must name a rembg model".into());
            }
            for (id, unit) in &backend.controlnet_models {
                if !id.parse::<u32>().is_ok_and(|id| (1..=1000).contains(&id)) {
                    return fail("controlnet_models", format!("{id:?} is not a preprocessorId (1 to 1000)"));
                }
                if control_unit(unit).is_none() {
                    return fail(
                        "controlnet_models",
                        format!("{id}: {unit:?} is not \"module:model\" (such as \"canny:control_v11p_sd15_canny\")"),
                    );
                }
            }
            if let Some(unit) = &backend.ip_adapter
                && control_unit(unit).is_none()
            {
                return fail("ip_adapter", format!("{unit:?} is not \"module:model\""));
            }
            match (backend.kind, &backend.workflow) {
                (BackendKind::Comfyui, None) => {
                    return fail("workflow", "a comfyui backend needs its workflow (API format JSON file)".into());
                }
                (BackendKind::Comfyui, Some(_)) => {}
                (kind, Some(_)) => {
                    return fail("workflow", format!("only comfyui backends take a workflow, not {}", kind.as_str()));
                }
                (_, None) => {}
            }
        }
        for (index, model) in self.models.iter().enumerate() {
            for name in &model.backends {
                if !names.contains(name.as_str()) {
                    return Err(ConfigError(format!(
                        "`models[{index}].backends`: {name:?} is not the name of one of the [[backends]]"
                    )));
                }
            }
        }
        if self.render.no_backend_timeout < Duration::from_secs(1) {
            return Err(ConfigError("`render.no_backend_timeout`: must be at least 1s".into()));
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("easel.db").display()),
        }
    }

    /// The base of the image URLs, without a trailing slash. `listen` is the fallback, so a server
    /// on port 0 passes the address it actually bound.
    pub fn public_url_or(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{bound}"),
        }
    }
}

/// The database a URL selects; the scheme picks the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<DatabaseUrl, InvalidSetting> {
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            let path = path.split('?').next().unwrap_or("");
            if path.is_empty() || path == ":memory:" {
                return Err(InvalidSetting::new(
                    "database_url",
                    format!("{url:?} must name a database file (sqlite://PATH)"),
                ));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_string()));
        }
        let scheme = url.split(':').next().unwrap_or("");
        let reason = format!(
            "{:?}: unsupported database scheme {scheme:?} (supported: sqlite://PATH, postgres://...)",
            redact_url(url)
        );
        Err(InvalidSetting::new("database_url", reason))
    }
}

/// An absolute `http://` or `https://` URL (the URL parser requires a host for both).
fn is_http_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// A URL fit for logs and error messages: any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

fn describe_figment_error(error: figment::Error) -> String {
    let setting = error.path.join(".");
    let origin = match &error.metadata {
        Some(meta) if meta.name.contains("environment") => {
            format!(" (from environment variable EASEL_{})", error.path.join("__").to_uppercase())
        }
        Some(meta) => match &meta.source {
            Some(source) => format!(" (from {source})"),
            None => format!(" (from {})", meta.name),
        },
        None => String::new(),
    };
    let kind = error.kind.to_string();
    if setting.is_empty() { format!("{kind}{origin}") } else { format!("`{setting}`{origin}: {kind}") }
}

/// `webhook.proxy_url`: an HTTP CONNECT proxy, `http://[user:password@]HOST[:PORT]`. Checked when
/// the configuration is read; the client only takes it apart.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProxyUrl(url::Url);

impl ProxyUrl {
    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

impl FromStr for ProxyUrl {
    type Err = InvalidSetting;

    fn from_str(text: &str) -> Result<ProxyUrl, InvalidSetting> {
        let invalid = |reason: String| InvalidSetting::new("webhook.proxy_url", reason);
        let url = url::Url::parse(text)
            .map_err(|e| invalid(format!("{:?} is not a URL ({e})", redact_url(text))).caused_by(e))?;
        if url.scheme() != "http" || url.host_str().is_none() {
            return Err(invalid(format!("{:?} must be http://HOST:PORT (an HTTP CONNECT proxy)", redact_url(text))));
        }
        Ok(ProxyUrl(url))
    }
}

impl TryFrom<String> for ProxyUrl {
    type Error = InvalidSetting;

    fn try_from(text: String) -> Result<ProxyUrl, InvalidSetting> {
        text.parse()
    }
}

impl From<ProxyUrl> for String {
    fn from(proxy: ProxyUrl) -> String {
        proxy.0.into()
    }
}

/// Without the password.
impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_url(self.0.as_str()))
    }
}

/// `s3://bucket/some/prefix` to (`bucket`, `Some("some/prefix")`).
pub fn parse_s3_url(url: &str) -> Option<(String, Option<String>)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = match rest.split_once('/') {
        Some((bucket, prefix)) => (bucket, Some(prefix.trim_matches('/')).filter(|p| !p.is_empty())),
        None => (rest, None),
    };
    if bucket.is_empty() {
        return None;
    }
    Some((bucket.to_string(), prefix.map(str::to_string)))
}

/// Durations as human text in TOML and environment variables: "250ms", "5s", "2h", "1day".
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*duration).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(D::Error::custom)
    }

    pub fn parse(text: &str) -> Result<Duration, InvalidDuration> {
        if text.trim() == "0" {
            return Ok(Duration::ZERO);
        }
        humantime::parse_duration(text.trim()).map_err(|source| InvalidDuration { text: text.to_string(), source })
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{text:?} is not a duration like \"500ms\", \"5s\" or \"2h\" ({source})")]
    pub struct InvalidDuration {
        text: String,
        source: humantime::DurationError,
    }
}

/// Lists of durations: `["0s", "5s", "5m"]`.
pub mod duration_list_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(durations: &[Duration], serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(durations.len()))?;
        for duration in durations {
            seq.serialize_element(&humantime::format_duration(*duration).to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        texts.iter().map(|text| super::duration_text::parse(text).map_err(D::Error::custom)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_human_text() {
        assert_eq!(duration_text::parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(duration_text::parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration_text::parse("0").unwrap(), Duration::ZERO);
        assert!(duration_text::parse("soon").is_err());
    }

    #[test]
    fn database_url_scheme_selects_the_backend() {
        assert_eq!(DatabaseUrl::parse("sqlite://data/e.db").unwrap(), DatabaseUrl::Sqlite("data/e.db".into()));
        assert_eq!(DatabaseUrl::parse("sqlite:e.db?mode=rwc").unwrap(), DatabaseUrl::Sqlite("e.db".into()));
        assert!(DatabaseUrl::parse("sqlite::memory:").is_err());
        assert!(DatabaseUrl::parse("mysql://x").unwrap_err().to_string().contains("unsupported database scheme"));
        assert_eq!(
            DatabaseUrl::parse("postgres://easel@db/easel").unwrap(),
            DatabaseUrl::Postgres("postgres://easel@db/easel".into())
        );
        assert_eq!(redact_url("postgres://easel:hunter2@db/easel"), "postgres://easel:***@db/easel");
    }

    #[test]
    fn sdapi_variations_controlnets_and_ip_adapter_are_checked() {
        let load = |backend: &str| -> Result<Config, String> {
            let text = format!("[[backends]]\nname = \"a1111\"\nurl = \"http://127.0.0.1:7860\"\n{backend}");
            let config: Config = Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::string(&text))
                .extract()
                .map_err(|e| e.to_string())?;
            config.validate().map(|()| config).map_err(|e| e.to_string())
        };
        let config = load(
            "kind = \"sdapi\"\nvariations = [\"upscale\", \"nobg\"]\n\
             controlnet_models = { 19 = \"canny:control_v11p_sd15_canny [d14c016b]\" }\n\
             ip_adapter = \"ip-adapter_clip_sd15:ip-adapter_sd15\"",
        )
        .unwrap();
        let backend = &config.backends[0];
        assert_eq!(backend.variation_transforms(), ["UPSCALE", "NOBG"]);
        assert_eq!(backend.controlnet(19), Some(("canny", "control_v11p_sd15_canny [d14c016b]")));
        assert_eq!(backend.controlnet(20), None);
        assert_eq!(backend.ip_adapter_unit(), Some(("ip-adapter_clip_sd15", "ip-adapter_sd15")));
        let defaults = load("kind = \"sdapi\"").unwrap();
        assert_eq!(defaults.backends[0].variation_transforms(), ["UPSCALE", "UNIVERSAL_UPSCALER", "UNZOOM"]);
        assert!(load("kind = \"openai\"").unwrap().backends[0].variation_transforms().is_empty());
        let refused = [
            ("kind = \"sdapi\"\nvariations = [\"zoom\"]", "`backends[0].variations`: \"zoom\" is not one of"),
            ("kind = \"openai\"\nvariations = [\"upscale\"]", "openai backends cannot do \"upscale\"; they do unzoom"),
            ("kind = \"cog\"\nvariations = [\"unzoom\"]", "cog backends cannot do \"unzoom\"; they do none"),
            ("kind = \"cog\"\nip_adapter = \"a:b\"", "`backends[0].ip_adapter`: only sdapi backends"),
            ("kind = \"sdapi\"\ncontrolnet_models = { x = \"canny:m\" }", "\"x\" is not a preprocessorId"),
            ("kind = \"sdapi\"\ncontrolnet_models = { 19 = \"canny\" }", "is not \"module:model\""),
            ("kind = \"sdapi\"\nip_adapter = \":model\"", "`backends[0].ip_adapter`"),
            ("kind = \"sdapi\"\nupscaler = \" \"", "`backends[0].upscaler`"),
        ];
        for (backend, words) in refused {
            let error = load(backend).unwrap_err();
            assert!(error.contains(words), "{backend}: {error}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn the_documented_example_file_loads_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/easel.example.toml");
        let from_file: Config =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::file_exact(&path)).extract().unwrap();
        let mut defaults = Config::default();
        defaults.render.workers = from_file.render.workers;
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }
}
