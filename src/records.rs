//! The domain records: users, API keys, generations and their images and variations, render
//! jobs, webhook deliveries and their attempts, as the rest of Easel handles them. Plain data with
//! no I/O; the store persists them, `http` and `wire` shape them for clients.

use bytes::Bytes;

use crate::clock::Millis;
use crate::generation::GenerationParams;
use crate::ids::{ApiKeyId, DeliveryId, GenerationId, ImageId, UserId, VariationId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    Pending,
    Complete,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Complete => "COMPLETE",
            JobStatus::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Option<JobStatus> {
        match text {
            "PENDING" => Some(JobStatus::Pending),
            "COMPLETE" => Some(JobStatus::Complete),
            "FAILED" => Some(JobStatus::Failed),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    /// How many generations and variations may be pending at once (`apiConcurrencySlots`).
    pub api_concurrency_slots: u32,
    pub created_at: Millis,
}

/// A production API key's record. The key itself is not here: only its hash is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub user_id: UserId,
    pub name: String,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    /// The HTTPS URL callbacks go to; immutable.
    pub webhook_url: Option<String>,
    /// The webhook callback API key, sealed under the master key; immutable.
    pub webhook_api_key_sealed: Option<Vec<u8>>,
    /// The Standard Webhooks signing secret, sealed under the master key.
    pub signing_secret_sealed: Vec<u8>,
    /// Deleted keys no longer authenticate, but stay on record for the generations they made.
    pub deleted_at: Option<Millis>,
    /// The first failed callback attempt since the last successful one (`None`: the last attempt
    /// succeeded, or there was none).
    pub webhook_failing_since: Option<Millis>,
    /// When the webhook was disabled for failing `webhook.disable_after`: its deliveries are held.
    pub webhook_disabled_at: Option<Millis>,
    /// May list, create, rotate and delete its user's keys (`/keys`, the console's keys page).
    pub manage_keys: bool,
    /// The key's last four characters, for a masked display (`None` for keys made before hints).
    pub key_hint: Option<String>,
}

/// A webhook the recording of attempts just disabled.
#[derive(Clone, Debug, PartialEq)]
pub struct DisabledWebhook {
    pub api_key_id: ApiKeyId,
    pub url: Option<String>,
    pub failing_since: Millis,
    pub disabled_at: Millis,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub id: GenerationId,
    pub user_id: UserId,
    pub api_key_id: ApiKeyId,
    pub status: JobStatus,
    pub params: GenerationParams,
    pub failure_reason: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// In index order; empty until the generation is complete.
    pub images: Vec<Image>,
}

impl Generation {
    /// A new PENDING generation of `params`, asked for at `now` with `api_key_id`, a key of
    /// `user_id`.
    pub fn pending(user_id: UserId, api_key_id: ApiKeyId, params: GenerationParams, now: Millis) -> Generation {
        Generation {
            id: GenerationId::random(),
            user_id,
            api_key_id,
            status: JobStatus::Pending,
            params,
            failure_reason: None,
            created_at: now,
            updated_at: now,
            images: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub id: ImageId,
    pub generation_id: GenerationId,
    pub user_id: UserId,
    pub index: u32,
    /// Where the file is in image storage; also its path under `/cdn/`.
    pub storage_key: String,
    pub width: u32,
    pub height: u32,
    pub created_at: Millis,
    pub variations: Vec<Variation>,
}

/// A variation job of one image: a transform of the image, or of an earlier variation's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Variation {
    pub id: VariationId,
    /// The generated image this variation belongs to (directly, or through `source_key`).
    pub image_id: ImageId,
    pub generation_id: GenerationId,
    pub user_id: UserId,
    pub api_key_id: ApiKeyId,
    pub transform: Transform,
    /// The file to transform when it is not the image's own: a complete variation's result
    /// (`isVariation`, `variationId`).
    pub source_key: Option<String>,
    pub status: JobStatus,
    /// Set once complete.
    pub storage_key: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// The inference backend that ran (or runs) it; `None` on the built-in renderer.
    pub backend: Option<String>,
}

impl Variation {
    /// A new pending variation of `image` made through `api_key` at `now`, of the image's own
    /// file or of `source_key`.
    pub fn pending(
        image: &Image,
        api_key: ApiKeyId,
        transform: Transform,
        source_key: Option<String>,
        now: Millis,
    ) -> Self {
        Variation {
            id: VariationId::random(),
            image_id: image.id,
            generation_id: image.generation_id,
            user_id: image.user_id,
            api_key_id: api_key,
            transform,
            source_key,
            status: JobStatus::Pending,
            storage_key: None,
            failure_reason: None,
            created_at: now,
            updated_at: now,
            backend: None,
        }
    }
}

/// An uploaded init image: first an upload policy, then the file.
#[derive(Clone, Debug, PartialEq)]
pub struct InitImage {
    pub id: uuid::Uuid,
    pub user_id: UserId,
    pub kind: InitImageKind,
    /// `png`, `jpg`, `jpeg` or `webp`, as the client declared it.
    pub extension: String,
    pub storage_key: String,
    pub created_at: Millis,
    /// The upload policy's end.
    pub expires_at: Millis,
    /// When Easel received the file (local storage); `None` with S3, which takes it directly.
    pub uploaded_at: Option<Millis>,
    pub size: Option<i64>,
}

/// What an init image is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitImageKind {
    /// `POST /init-image`: image-to-image.
    Init,
    /// `POST /canvas-init-image`: the canvas editor's picture and its mask.
    CanvasInit,
    CanvasMask,
}

impl InitImageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InitImageKind::Init => "INIT",
            InitImageKind::CanvasInit => "CANVAS_INIT",
            InitImageKind::CanvasMask => "CANVAS_MASK",
        }
    }

    pub fn parse(text: &str) -> Option<InitImageKind> {
        [InitImageKind::Init, InitImageKind::CanvasInit, InitImageKind::CanvasMask]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// What a variation does to its source picture.
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// `POST /variations/upscale`: twice the width and the height.
    Upscale,
    /// `POST /variations/nobg`: the background made transparent, as a PNG.
    NoBackground,
    /// `POST /variations/unzoom`: the picture zoomed out, its surroundings extended.
    Unzoom,
    /// `POST /variations/universal-upscaler`: upscaled by a chosen factor, detail sharpened.
    UniversalUpscale(UniversalUpscale),
}

/// The settings of a universal upscale, as the client sent them (validated).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UniversalUpscale {
    /// 1.0 to 2.0.
    pub multiplier: f64,
    /// 1 to 10 each, when given.
    pub creativity_strength: Option<u8>,
    pub detail_contrast: Option<u8>,
    pub similarity: Option<u8>,
    /// `upscalerStyle` or `ultraUpscaleStyle` (never both).
    pub style: Option<String>,
    pub ultra_style: Option<String>,
    pub prompt: Option<String>,
}

impl Transform {
    /// The name the store keeps.
    pub fn name(&self) -> &'static str {
        match self {
            Transform::Upscale => "UPSCALE",
            Transform::NoBackground => "NOBG",
            Transform::Unzoom => "UNZOOM",
            Transform::UniversalUpscale(_) => "UNIVERSAL_UPSCALER",
        }
    }

    /// The `transformType` clients read: one of the SDKs' `VariationType` values, which have no
    /// name of their own for the universal upscaler (it is an upscale).
    pub fn transform_type(&self) -> &'static str {
        match self {
            Transform::UniversalUpscale(_) => "UPSCALE",
            other => other.name(),
        }
    }

    /// The settings the store keeps beside the name (JSON), if the transform has any.
    pub fn settings(&self) -> Option<String> {
        match self {
            Transform::UniversalUpscale(settings) => serde_json::to_string(settings).ok(),
            _ => None,
        }
    }

    /// The transform the store kept, or `None` for a name or settings it cannot read.
    pub fn from_stored(name: &str, settings: Option<&str>) -> Option<Transform> {
        Some(match name {
            "UPSCALE" => Transform::Upscale,
            "NOBG" => Transform::NoBackground,
            "UNZOOM" => Transform::Unzoom,
            "UNIVERSAL_UPSCALER" => Transform::UniversalUpscale(serde_json::from_str(settings?).ok()?),
            _ => return None,
        })
    }

    /// The API credits it costs on a source picture of `width` x `height`: one, and for the
    /// universal upscaler one per started megapixel of its result
    /// ([`universal_upscale_cost`], which `POST /pricing-calculator` uses too).
    pub fn api_credit_cost(&self, width: u32, height: u32) -> u64 {
        match self {
            Transform::UniversalUpscale(settings) => {
                universal_upscale_cost(f64::from(width) * f64::from(height) * settings.multiplier.powi(2) / 1e6)
            }
            _ => 1,
        }
    }

    /// The extension (and so the format) of the file it makes.
    pub fn extension(&self) -> &'static str {
        match self {
            Transform::NoBackground => "png",
            _ => "jpg",
        }
    }
}

/// The API credits of a universal upscale whose result has `megapixels`: one per started
/// megapixel, at least one.
pub fn universal_upscale_cost(megapixels: f64) -> u64 {
    (megapixels.ceil() as u64).max(1)
}

/// A newly rendered image, recorded when its generation completes.
#[derive(Clone, Debug, PartialEq)]
pub struct NewImage {
    pub id: ImageId,
    pub index: u32,
    pub storage_key: String,
    pub width: u32,
    pub height: u32,
}

/// A claimed job for the render workers.
#[derive(Clone, Debug)]
pub struct RenderJob {
    pub work: RenderWork,
    /// How many times the job has been claimed, this claim included (1 the first time).
    pub attempt: u32,
}

// A node holds at most `render.max_jobs_in_flight` of these: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum RenderWork {
    Generation(Generation),
    /// A variation of `source` (or of `variation.source_key`, when set).
    Variation {
        variation: Variation,
        source: Image,
    },
}

impl RenderWork {
    pub fn id(&self) -> RenderJobId {
        match self {
            RenderWork::Generation(generation) => RenderJobId::Generation(generation.id),
            RenderWork::Variation { variation, .. } => RenderJobId::Variation(variation.id),
        }
    }
}

/// Which job: a generation or a variation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenderJobId {
    Generation(GenerationId),
    Variation(VariationId),
}

/// How a render job ended.
#[derive(Clone, Debug)]
pub enum JobOutcome<T> {
    Complete(T),
    Failed { reason: String },
}

/// The result of asking for a job slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Accepted,
    /// What the job works on (the image to upscale) is not the user's, or was deleted meanwhile.
    SourceMissing,
    /// The user already has `slots` jobs pending.
    SlotsFull {
        slots: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// The `event_type` of a test callback's delivery (`POST /webhook/test`). Its body is a real
/// callback's (`image_generation.complete`); the delivery is sent once, never retried.
pub const TEST_EVENT_TYPE: &str = "webhook.test";

/// A webhook delivery to enqueue with a finished generation (the transactional outbox), or a
/// test callback.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub generation_id: GenerationId,
    pub user_id: UserId,
    pub api_key_id: ApiKeyId,
    pub event_type: String,
    pub url: String,
    /// `scheme://host:port` of `url`: the unit of per-receiver concurrency.
    pub endpoint: String,
    pub payload: Bytes,
    pub created_at: Millis,
    /// Claimed by the inserting node at once (`owner`, `expires_at`), so it can send straight from
    /// memory without another round trip; `None` leaves it to whichever node claims it.
    pub lease: Option<(String, Millis)>,
}

/// A claimed delivery, with everything needed to send it.
#[derive(Clone, Debug)]
pub struct DeliveryJob {
    pub id: DeliveryId,
    pub generation_id: GenerationId,
    pub user_id: UserId,
    pub api_key_id: ApiKeyId,
    pub event_type: String,
    pub url: String,
    pub endpoint: String,
    pub payload: Bytes,
    /// Attempts made so far (all runs of the schedule).
    pub attempt_count: u32,
    /// Position in the retry schedule of the attempt about to be made.
    pub schedule_index: u32,
}

impl DeliveryJob {
    pub fn from_new(delivery: &NewDelivery) -> DeliveryJob {
        DeliveryJob {
            id: delivery.id,
            generation_id: delivery.generation_id,
            user_id: delivery.user_id,
            api_key_id: delivery.api_key_id,
            event_type: delivery.event_type.clone(),
            url: delivery.url.clone(),
            endpoint: delivery.endpoint.clone(),
            payload: delivery.payload.clone(),
            attempt_count: 0,
            schedule_index: 0,
        }
    }
}

/// A delivery as the operator and the owner see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub generation_id: GenerationId,
    pub user_id: UserId,
    pub api_key_id: ApiKeyId,
    pub event_type: String,
    pub url: String,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<Millis>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub finished_at: Option<Millis>,
    /// Pending, but held: its key's webhook is disabled.
    pub held: bool,
}

/// One attempt to deliver, as logged.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub delivery_id: DeliveryId,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub started_at: Millis,
    pub duration_ms: u32,
    pub status_code: Option<u16>,
    /// Why it failed, as a stable class (`connect_refused`, `tls`, `timeout`, `http_status`, ...).
    pub error_class: Option<String>,
    /// Why it failed, in words.
    pub error_detail: Option<String>,
    pub response_excerpt: Option<String>,
}

/// What happens to a delivery after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum NextStep {
    Succeeded,
    /// Try again at `at`, as attempt `schedule_index` of the schedule.
    Retry {
        at: Millis,
        schedule_index: u32,
    },
    /// Give up: the schedule is exhausted or the receiver said 410 Gone.
    Failed,
}

/// The outcome of one attempt, to record.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub attempt: Attempt,
    /// The key whose webhook was called: its failing clock moves with the attempt.
    pub api_key_id: ApiKeyId,
    pub lease_owner: String,
    pub next: NextStep,
}

/// Deliveries wanted for one endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointClaim {
    pub endpoint: String,
    /// How many to claim.
    pub want: u32,
    /// How many of its deliveries the claiming node already holds (they are still due in the
    /// store until their attempts are recorded).
    pub held: u32,
}

/// A delivery is redelivered at most once in this time (milliseconds).
pub const REDELIVERY_INTERVAL_MS: Millis = 1000;

/// The result of asking for a redelivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redelivery {
    /// Pending again, due now.
    Queued,
    /// It was already due or in flight: nothing changed.
    AlreadyQueued,
    /// It was redelivered less than `REDELIVERY_INTERVAL_MS` ago: nothing changed.
    TooSoon,
    /// No such delivery (of this user).
    Missing,
}

/// Which deliveries to list.
#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    pub generation: Option<GenerationId>,
    pub user: Option<UserId>,
    pub status: Option<DeliveryStatus>,
    pub limit: u32,
}

/// A claim of jobs for one inference backend (`[[backends]]`).
#[derive(Clone, Debug)]
pub struct BackendClaim<'a> {
    pub owner: &'a str,
    /// The backend's name, recorded on each claimed job while it holds its lease.
    pub backend: &'a str,
    /// At most this many leased jobs on the backend, all nodes together.
    pub max_concurrent: u32,
    /// The models the backend serves: only their jobs are claimed.
    pub models: &'a [uuid::Uuid],
    pub now: Millis,
    pub lease_until: Millis,
    /// Most jobs this claim takes (this node's free capacity).
    pub limit: u32,
    /// Generations not to claim for this backend now (ids): they just timed out on it and should
    /// go to another backend of their model first.
    pub skip: &'a [String],
    /// The variations it runs ([`Transform::name`]s): variations of images of `models` with
    /// these transforms are claimed too, after the generations.
    pub transforms: &'a [&'a str],
}

/// What one node last saw of one backend's health.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendHealth {
    pub name: String,
    pub node_id: String,
    pub healthy: bool,
    pub last_error: Option<String>,
    pub last_error_at: Option<Millis>,
    pub checked_at: Millis,
}

/// The backends as the database sees them: health by node, jobs running on each backend, and
/// jobs waiting for each model.
#[derive(Clone, Debug, Default)]
pub struct BackendOverview {
    pub health: Vec<BackendHealth>,
    pub running: std::collections::BTreeMap<String, u64>,
    pub pending_by_model: std::collections::BTreeMap<String, u64>,
}

/// Queue sizes read at each metrics scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueStats {
    /// Generations and variations PENDING and not claimed.
    pub render_queue: u64,
    /// Deliveries `pending`.
    pub deliveries_pending: u64,
    /// When the oldest delivery that is due (and not leased) came due.
    pub oldest_due_at: Option<Millis>,
    /// Live keys whose webhook is disabled (their deliveries are held).
    pub disabled_webhooks: u64,
}

/// The database pool(s): connections open and idle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub open: u32,
    pub idle: u32,
}

/// What an inspector bin answers every request with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinResponse {
    pub status: u16,
    /// Header names and values, in order (a name may repeat).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How long the bin waits (after recording) before answering.
    pub delay_ms: u32,
}

/// A request inspector bin: a capture URL of one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bin {
    pub id: uuid::Uuid,
    pub user_id: UserId,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub response: BinResponse,
    /// Requests it holds now, and their stored size (what `inspector.max_bytes_per_bin` counts).
    pub request_count: u64,
    pub stored_bytes: u64,
}

/// A request a bin recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedRequest {
    pub bin_id: uuid::Uuid,
    /// The bin's running number for it (1, 2, ...): newer requests have larger numbers.
    pub seq: i64,
    pub received_at: Millis,
    pub method: String,
    /// The path after the bin's URL, with the query (`/`, `/a/b?c=d`).
    pub path: String,
    /// Header names and values as received (values as lossy UTF-8).
    pub headers: Vec<(String, String)>,
    /// The body, up to `inspector.body_cap` bytes.
    pub body: Vec<u8>,
    /// The whole body's size in bytes.
    pub body_size: i64,
    /// The sender's address (`ip:port`), or `in-process` for this Easel's own callbacks.
    pub source: String,
    /// The callback check against the owner's keys calling back this bin (a JSON document of
    /// `wire::CallbackCheck`s), when any does.
    pub verification: Option<String>,
}

/// How much a bin keeps: past either bound the oldest requests are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinLimits {
    pub max_requests: u64,
    pub max_bytes: u64,
}
