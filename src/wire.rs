//! Every JSON document Easel emits, as typed shapes built from the store's records: the REST
//! responses, the webhook callback body and the command line's `--json` output. A shape is defined
//! once here, so changing it changes it everywhere it is printed (`GET /deliveries/{id}` and
//! `easel deliveries show --json` print the same [`Delivery`]).
//!
//! The field order is the key order on the wire (`serde_json` preserves it), and the order, the
//! types and `null` versus absent follow what the official SDKs parse (`leonardo-rest-v1.md`) and,
//! for the callback, the webhook guide's sample request key for key. A field of type [`Null`] is a
//! key the SDKs know that Easel has no value for; an `Option` skipped when `None` is a key that
//! only some documents have.

use std::net::IpAddr;

use serde::Serialize;
use uuid::Uuid;

use crate::clock::{Millis, rfc3339_ms};
use crate::ids::{ApiKeyId, DeliveryId, GenerationId, ImageId, UserId, VariationId};
use crate::images::{ImageStore, StorageFailure};
use crate::models::Model;
use crate::records::Transform;
use crate::secrets::mask;
use crate::store;

/// A key the SDKs (or the guide's sample) have but Easel has no value for: always `null`.
pub type Null = ();

/// A list the SDKs have but Easel never fills: always `[]`.
pub type EmptyList = [Null; 0];

/// Stands in for the API key in callbacks: Easel stores only its hash.
pub const MASKED_API_KEY: &str = "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX";
/// The owner of platform models in callbacks.
pub const PLATFORM_USER_ID: &str = "00000000-0000-0000-0000-000000000000";

// ---------------------------------------------------------------------------------------------
// REST v1: generations and variations
// ---------------------------------------------------------------------------------------------

/// What a job costs, in API credits: `{"amount": "2", "unit": "CREDITS"}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Cost {
    pub amount: String,
    pub unit: &'static str,
}

impl Cost {
    pub fn credits(credits: u64) -> Cost {
        Cost { amount: credits.to_string(), unit: "CREDITS" }
    }
}

/// The answer to `POST /generations`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SdGenerationJobResponse {
    pub sd_generation_job: SdGenerationJob,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SdGenerationJob {
    pub generation_id: GenerationId,
    pub api_credit_cost: u64,
    pub cost: Cost,
}

impl SdGenerationJobResponse {
    pub fn new(generation: &store::Generation) -> SdGenerationJobResponse {
        let credits = generation.params.api_credit_cost();
        SdGenerationJobResponse {
            sd_generation_job: SdGenerationJob {
                generation_id: generation.id,
                api_credit_cost: credits,
                cost: Cost::credits(credits),
            },
        }
    }
}

/// The answer to `POST /variations/upscale`, `nobg`, `unzoom` and `universal-upscaler`: one
/// job under a key that names its kind (`sdUpscaleJob`, `sdNobgJob`, `sdUnzoomJob`,
/// `universalUpscaler`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = std::collections::BTreeMap<String, VariationJob>)]
pub struct VariationJobResponse(std::collections::BTreeMap<&'static str, VariationJob>);

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariationJob {
    pub id: VariationId,
    pub api_credit_cost: u64,
    pub cost: Cost,
}

impl VariationJobResponse {
    pub fn new(variation: &store::Variation, credits: u64) -> VariationJobResponse {
        let key = match variation.transform {
            Transform::Upscale => "sdUpscaleJob",
            Transform::NoBackground => "sdNobgJob",
            Transform::Unzoom => "sdUnzoomJob",
            Transform::UniversalUpscale(_) => "universalUpscaler",
        };
        let job = VariationJob { id: variation.id, api_credit_cost: credits, cost: Cost::credits(credits) };
        VariationJobResponse([(key, job)].into())
    }
}

/// `GET /generations/{id}`: the generation, or `null` when the caller has none by that id.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct GenerationsByPk {
    pub generations_by_pk: Option<Generation>,
}

/// `GET /generations/user/{userId}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct GenerationList {
    pub generations: Vec<Generation>,
}

/// `DELETE /generations/{id}`: the id deleted, or `null` when there was nothing to delete.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeleteGenerationsByPk {
    pub delete_generations_by_pk: Option<DeletedGeneration>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedGeneration {
    pub id: GenerationId,
}

/// A generation as `generations_by_pk` and `generations[]` show it: only keys the SDKs know, `null`
/// only where they allow it, `seed` an integer. `failureReason` (an Easel extension) only on
/// failed generations.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Generation {
    pub id: GenerationId,
    #[schema(schema_with = schema::job_status)]
    pub status: &'static str,
    pub created_at: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub model_id: Uuid,
    pub image_height: u32,
    pub image_width: u32,
    pub inference_steps: u32,
    pub guidance_scale: f64,
    pub seed: u64,
    pub public: bool,
    pub scheduler: String,
    pub sd_version: String,
    pub preset_style: Option<String>,
    pub init_strength: Option<f64>,
    pub photo_real: bool,
    pub photo_real_strength: Option<f64>,
    pub prompt_magic: bool,
    pub prompt_magic_strength: Option<f64>,
    pub prompt_magic_version: Option<String>,
    pub ultra: Option<bool>,
    #[serde(rename = "generated_images")]
    pub generated_images: Vec<GeneratedImage>,
    #[serde(rename = "generation_elements")]
    pub generation_elements: Vec<GenerationElement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

impl Generation {
    pub fn new(generation: &store::Generation, images: &ImageStore) -> Generation {
        let p = &generation.params;
        Generation {
            id: generation.id,
            status: generation.status.as_str(),
            created_at: rfc3339_ms(generation.created_at),
            prompt: p.prompt.clone(),
            negative_prompt: p.negative_prompt.clone(),
            model_id: p.model_id,
            image_height: p.height,
            image_width: p.width,
            inference_steps: p.inference_steps,
            guidance_scale: p.guidance_scale,
            seed: p.seed,
            public: p.public,
            scheduler: p.scheduler.clone(),
            sd_version: p.sd_version.clone(),
            preset_style: p.preset_style.clone(),
            init_strength: p.init_strength,
            photo_real: p.photo_real,
            photo_real_strength: p.photo_real_strength,
            prompt_magic: p.prompt_magic,
            prompt_magic_strength: p.prompt_magic_strength,
            prompt_magic_version: p.prompt_magic_version.clone(),
            ultra: p.ultra,
            generated_images: generation.images.iter().map(|image| GeneratedImage::new(image, images)).collect(),
            generation_elements: p.elements.iter().enumerate().map(GenerationElement::new).collect(),
            failure_reason: generation.failure_reason.clone(),
        }
    }
}

/// An image of a generation in REST (`generated_images[]`), with its variations.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedImage {
    pub id: ImageId,
    pub url: String,
    pub nsfw: bool,
    pub like_count: u32,
    #[serde(rename = "motionMP4URL")]
    #[schema(schema_with = schema::null)]
    pub motion_mp4_url: Null,
    #[serde(rename = "generated_image_variation_generics")]
    pub generated_image_variation_generics: Vec<ImageVariation>,
}

impl GeneratedImage {
    pub fn new(image: &store::Image, images: &ImageStore) -> GeneratedImage {
        GeneratedImage {
            id: image.id,
            url: images.url(&image.storage_key),
            nsfw: false,
            like_count: 0,
            motion_mp4_url: (),
            generated_image_variation_generics: image
                .variations
                .iter()
                .map(|v| ImageVariation::new(v, images))
                .collect(),
        }
    }
}

/// A variation under its image (`generated_image_variation_generics[]`). The SDKs' shape here has
/// no `createdAt` (only `GET /variations/{id}` has it), and the TypeScript SDK drops keys it does
/// not know, so it is not sent.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageVariation {
    pub id: VariationId,
    #[schema(schema_with = schema::job_status)]
    pub status: &'static str,
    pub transform_type: &'static str,
    pub url: Option<String>,
}

impl ImageVariation {
    pub fn new(variation: &store::Variation, images: &ImageStore) -> ImageVariation {
        ImageVariation {
            id: variation.id,
            status: variation.status.as_str(),
            transform_type: variation.transform.transform_type(),
            url: variation.storage_key.as_deref().map(|key| images.url(key)),
        }
    }
}

/// `GET /variations/{id}`: a list of one variation, or empty.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct VariationList {
    pub generated_image_variation_generic: Vec<Variation>,
}

/// A variation as `GET /variations/{id}` shows it; `url` is `null` until done.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Variation {
    pub id: VariationId,
    pub created_at: String,
    #[schema(schema_with = schema::job_status)]
    pub status: &'static str,
    pub transform_type: &'static str,
    pub url: Option<String>,
}

impl Variation {
    pub fn new(variation: &store::Variation, images: &ImageStore) -> Variation {
        Variation {
            id: variation.id,
            created_at: rfc3339_ms(variation.created_at),
            status: variation.status.as_str(),
            transform_type: variation.transform.transform_type(),
            url: variation.storage_key.as_deref().map(|key| images.url(key)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// REST v1: the user and the models
// ---------------------------------------------------------------------------------------------

/// `GET /me`. Easel does not meter tokens: balances are 0 and renewal dates `null`.
/// `apiConcurrencySlots` is real: the number of jobs the user may have pending at once.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UserDetailsResponse {
    #[schema(value_type = Vec<UserDetails>, min_items = 1, max_items = 1)]
    pub user_details: [UserDetails; 1],
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDetails {
    pub user: UserRef,
    #[schema(schema_with = schema::null)]
    pub token_renewal_date: Null,
    pub paid_tokens: u64,
    pub subscription_tokens: u64,
    pub subscription_gpt_tokens: u64,
    pub subscription_model_tokens: u64,
    pub api_concurrency_slots: u32,
    pub api_paid_tokens: u64,
    pub api_subscription_tokens: u64,
    #[schema(schema_with = schema::null)]
    pub api_plan_token_renewal_date: Null,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UserRef {
    pub id: UserId,
    pub username: String,
}

impl UserDetailsResponse {
    pub fn new(user: &store::User) -> UserDetailsResponse {
        UserDetailsResponse {
            user_details: [UserDetails {
                user: UserRef { id: user.id, username: user.username.clone() },
                token_renewal_date: (),
                paid_tokens: 0,
                subscription_tokens: 0,
                subscription_gpt_tokens: 0,
                subscription_model_tokens: 0,
                api_concurrency_slots: user.api_concurrency_slots,
                api_paid_tokens: 0,
                api_subscription_tokens: 0,
                api_plan_token_renewal_date: (),
            }],
        }
    }
}

/// `GET /platformModels`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PlatformModels {
    pub custom_models: Vec<PlatformModel>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PlatformModel {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub nsfw: bool,
    pub featured: bool,
    #[schema(schema_with = schema::null)]
    pub generated_image: Null,
}

impl PlatformModel {
    pub fn new(model: &Model) -> PlatformModel {
        PlatformModel {
            id: model.id,
            name: model.name.clone(),
            description: model.description.clone(),
            nsfw: model.nsfw,
            featured: model.featured,
            generated_image: (),
        }
    }
}

/// `GET /models/{id}`: `{"custom_models_by_pk": {...}}` or `null`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelsByPk {
    pub custom_models_by_pk: Option<ModelById>,
}

/// A catalogue model in the SDKs' `GetModelByIDCustomModels` shape.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelById {
    pub created_at: String,
    pub description: String,
    pub id: Uuid,
    #[schema(schema_with = schema::null)]
    pub instance_prompt: Null,
    pub model_height: u32,
    pub model_width: u32,
    pub name: String,
    pub public: bool,
    pub sd_version: String,
    pub status: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub updated_at: String,
}

impl ModelById {
    pub fn new(model: &Model) -> ModelById {
        ModelById {
            created_at: rfc3339_ms(model.created_at),
            description: model.description.clone(),
            id: model.id,
            instance_prompt: (),
            model_height: model.height,
            model_width: model.width,
            name: model.name.clone(),
            public: true,
            sd_version: model.sd_version.clone(),
            status: "COMPLETE",
            kind: "GENERAL",
            updated_at: rfc3339_ms(model.created_at),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Deliveries: REST (`/generations/{id}/deliveries`, `/deliveries/{id}`) and `easel deliveries`
// ---------------------------------------------------------------------------------------------

/// `GET /generations/{id}/deliveries`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
}

/// `GET /deliveries/{id}` and `POST /deliveries/{id}/retry`: the delivery, or `null`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryResponse {
    pub delivery: Option<Delivery>,
}

/// A webhook delivery, the same for the REST extension and `easel deliveries ... --json`, so
/// operators and users read one shape. `attempts` only where the attempt log was read (it is
/// absent from `easel deliveries list`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: DeliveryId,
    /// The `webhook-id` header of every attempt: the delivery's id.
    pub webhook_id: DeliveryId,
    pub generation_id: GenerationId,
    pub api_key_id: ApiKeyId,
    pub event_type: String,
    pub url: String,
    #[schema(schema_with = schema::delivery_status)]
    pub status: &'static str,
    pub attempt_count: u32,
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    /// Pending but held: the key's webhook is disabled (`POST /webhook/enable` resumes it).
    pub held: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<Attempt>>,
}

impl Delivery {
    /// The delivery without its attempt log.
    pub fn new(delivery: &store::Delivery) -> Delivery {
        Delivery {
            id: delivery.id,
            webhook_id: delivery.id,
            generation_id: delivery.generation_id,
            api_key_id: delivery.api_key_id,
            event_type: delivery.event_type.clone(),
            url: delivery.url.clone(),
            status: delivery.status.as_str(),
            attempt_count: delivery.attempt_count,
            next_attempt_at: delivery.next_attempt_at.map(rfc3339_ms),
            last_status_code: delivery.last_status_code,
            last_error: delivery.last_error.clone(),
            created_at: rfc3339_ms(delivery.created_at),
            updated_at: rfc3339_ms(delivery.updated_at),
            finished_at: delivery.finished_at.map(rfc3339_ms),
            held: delivery.held,
            attempts: None,
        }
    }

    /// The delivery with its attempt log.
    pub fn with_attempts(delivery: &store::Delivery, attempts: &[store::Attempt]) -> Delivery {
        Delivery { attempts: Some(attempts.iter().map(Attempt::new).collect()), ..Delivery::new(delivery) }
    }
}

/// One attempt of a delivery, as logged.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub attempt: u32,
    pub started_at: String,
    pub duration_ms: u32,
    pub status_code: Option<u16>,
    pub error_class: Option<String>,
    pub error_detail: Option<String>,
    pub response_excerpt: Option<String>,
}

impl Attempt {
    pub fn new(attempt: &store::Attempt) -> Attempt {
        Attempt {
            attempt: attempt.attempt,
            started_at: rfc3339_ms(attempt.started_at),
            duration_ms: attempt.duration_ms,
            status_code: attempt.status_code,
            error_class: attempt.error_class.clone(),
            error_detail: attempt.error_detail.clone(),
            response_excerpt: attempt.response_excerpt.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Troubleshooting callbacks: `POST /webhook/doctor` and `easel doctor --json`, `POST /webhook/test`
// ---------------------------------------------------------------------------------------------

/// How a doctor's step (or the whole run) came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DoctorVerdict {
    Ok,
    /// Not run: an earlier step failed, or it does not apply.
    Skipped,
    Warn,
    Fail,
}

impl DoctorVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            DoctorVerdict::Ok => "ok",
            DoctorVerdict::Skipped => "skipped",
            DoctorVerdict::Warn => "warn",
            DoctorVerdict::Fail => "fail",
        }
    }
}

/// One run of the webhook doctor against a URL: every step in order, and the worst verdict.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoctorReport {
    pub url: String,
    /// `fail` if a step failed, else `warn` if one warned, else `ok`.
    pub verdict: DoctorVerdict,
    pub started_at: String,
    pub duration_ms: u64,
    pub steps: Vec<DoctorStep>,
}

/// One step: `url`, `dns`, `egress`, `tcp`, `tls`, `http`, `bearer`, `signature`. The keys after
/// `advice` are present only on the steps they belong to.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoctorStep {
    pub step: &'static str,
    pub verdict: DoctorVerdict,
    /// What was found, in words.
    pub detail: String,
    /// What to do about it (`null` when nothing needs doing).
    pub advice: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// `dns`: every address the host resolves to, and whether callbacks may go there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<DoctorAddress>>,
    /// `egress`: the addresses callbacks leave from (`webhook.egress_ips`; empty: any).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub egress_ips: Option<Vec<IpAddr>>,
    /// `tcp`: a connection to each allowed address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<DoctorConnection>>,
    /// `tls`: the handshake, and the chain as the server sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<DoctorTls>,
    /// `http`, `bearer`, `signature`: the request's attempt, as the attempt log shows attempts
    /// (the excerpt is the response's first 200 bytes or so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Attempt>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoctorAddress {
    #[schema(value_type = String)]
    pub address: IpAddr,
    pub allowed: bool,
    /// Why the SSRF guard refuses it.
    pub refusal: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoctorConnection {
    /// `IP:PORT`.
    pub address: String,
    /// `connected`, `refused`, `timeout` or `failed`.
    pub outcome: &'static str,
    pub duration_ms: u64,
    /// The local address the connection left from (toward the proxy, with `webhook.proxy_url`).
    pub from: Option<String>,
    pub error_class: Option<&'static str>,
    pub error_detail: Option<String>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoctorTls {
    /// `TLSv1_3`, ...; `null` when the handshake failed.
    pub protocol: Option<String>,
    pub cipher: Option<String>,
    /// Exactly as the server sent them, leaf first.
    pub certificates: Vec<DoctorCertificate>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoctorCertificate {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    /// The DNS names and IP addresses it is for.
    pub names: Vec<String>,
}

/// `POST /webhook/test`: the test callback's delivery with its attempt log, and its one attempt.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestCallback {
    /// The receiver answered 2xx.
    pub delivered: bool,
    /// The attempt (`null` if none was recorded in time: the delivery is still pending).
    pub attempt: Option<Attempt>,
    pub delivery: Delivery,
}

// ---------------------------------------------------------------------------------------------
// Outside the REST API: errors, `/healthz`, `/egress-ips`
// ---------------------------------------------------------------------------------------------

/// Every error, in Leonardo's (Hasura's) shape: `{"error": "...", "path": "$", "code": "..."}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[schema(schema_with = schema::error_path)]
    pub path: &'static str,
    #[schema(schema_with = schema::error_code)]
    pub code: &'static str,
}

/// Every `code` of [`ErrorBody`].
pub const ERROR_CODES: &[&str] = &[
    "access-denied",
    "validation-failed",
    "parse-failed",
    "payload-too-large",
    "not-found",
    "method-not-allowed",
    "concurrency-limit",
    "rate-limited",
    "not-supported",
    "upstream-failed",
    "upload-refused",
    "permission-denied",
    "conflict",
    "limit-reached",
    "unexpected",
];

impl ErrorBody {
    pub fn new(error: String, code: &'static str) -> ErrorBody {
        ErrorBody { error, path: "$", code }
    }
}

/// `GET /healthz`: `{"status": "ok", "version"}`; while image storage fails
/// `{"status": "image storage failing", "storage": {"error", "since"}, "version"}`; without the
/// database `{"status": "database unreachable"}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageHealth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    /// The inference backends (`[[backends]]`), when there are any; their health does not change
    /// the status (a model without a working backend fails its jobs, not the node).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendStatus>,
}

/// `GET /readyz`: `{"status": "ready" | "not ready", "checks": {"database", "storage", "render",
/// "deliver"}}`, each check `"ok"` or what fails; roles this node does not run are absent.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub checks: ReadinessChecks,
}

#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ReadinessChecks {
    pub database: String,
    pub storage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub render: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver: Option<String>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StorageHealth {
    pub error: String,
    pub since: String,
}

impl Health {
    pub fn ok() -> Health {
        Health { status: "ok", storage: None, version: Some(env!("CARGO_PKG_VERSION")), backends: Vec::new() }
    }

    pub fn storage_failing(failure: &StorageFailure) -> Health {
        Health {
            status: "image storage failing",
            storage: Some(StorageHealth { error: failure.error.clone(), since: rfc3339_ms(failure.since) }),
            version: Some(env!("CARGO_PKG_VERSION")),
            backends: Vec::new(),
        }
    }

    pub fn database_unreachable() -> Health {
        Health { status: "database unreachable", storage: None, version: None, backends: Vec::new() }
    }
}

/// `GET /egress-ips`: the addresses callbacks leave from.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressIps {
    #[schema(value_type = Vec<String>)]
    pub egress_ips: Vec<IpAddr>,
}

// ---------------------------------------------------------------------------------------------
// The webhook callback body
// ---------------------------------------------------------------------------------------------

/// The callback body: the guide's sample request, key for key and in the same order, with the
/// generation's values. `seed` is a string here (an integer in REST). Secrets never travel in the
/// body: `apiKey.key` and `apiKey.webhookCallbackApiKey` are present but masked.
#[derive(Clone, Debug, Serialize)]
pub struct CallbackEvent {
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub object: &'static str,
    /// Milliseconds since the epoch.
    pub timestamp: Millis,
    pub api_version: &'static str,
    pub data: CallbackData,
}

#[derive(Clone, Debug, Serialize)]
pub struct CallbackData {
    pub object: CallbackGeneration,
}

/// A number that is a JSON integer when it is integral (`7`, as in the guide's sample), and as it
/// is otherwise (`7.5`).
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(untagged)]
pub enum Number {
    Integer(i64),
    Float(f64),
}

impl From<f64> for Number {
    fn from(value: f64) -> Number {
        if value.fract() == 0.0 && value.abs() < 1e15 { Number::Integer(value as i64) } else { Number::Float(value) }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackGeneration {
    pub id: GenerationId,
    pub created_at: String,
    pub updated_at: String,
    pub user_id: UserId,
    pub public: bool,
    pub flagged: bool,
    pub nsfw: bool,
    pub status: &'static str,
    pub core_model: &'static str,
    pub guidance_scale: Number,
    pub image_height: u32,
    pub image_width: u32,
    pub inference_steps: u32,
    pub init_generated_image_id: Option<ImageId>,
    pub init_image_id: Option<Uuid>,
    pub init_strength: Option<f64>,
    pub init_type: Option<&'static str>,
    pub init_upscaled_image_id: Null,
    pub model_id: Uuid,
    pub negative_prompt: String,
    pub prompt: String,
    pub quantity: u32,
    pub sd_version: String,
    pub tiling: bool,
    pub image_aspect_ratio: Null,
    pub token_cost: u32,
    pub negative_style_prompt: &'static str,
    pub seed: String,
    pub scheduler: String,
    pub preset_style: Option<String>,
    pub prompt_magic: bool,
    pub canvas_init_image_id: Option<Uuid>,
    pub canvas_mask_image_id: Option<Uuid>,
    pub canvas_request: bool,
    pub api: bool,
    pub pose_image2_image: bool,
    pub image_prompt_strength: Option<f64>,
    pub category: Null,
    pub pose_image2_image_type: Null,
    pub high_contrast: bool,
    pub api_dollar_cost: String,
    pub pose_image2_image_weight: Null,
    pub alchemy: Option<bool>,
    pub contrast_ratio: Option<f64>,
    pub high_resolution: Option<bool>,
    pub expanded_domain: Option<bool>,
    pub prompt_magic_version: Option<String>,
    pub unzoom: Null,
    pub unzoom_amount: Null,
    pub api_key_id: ApiKeyId,
    pub photo_real: bool,
    pub prompt_magic_strength: Option<f64>,
    pub photo_real_strength: Option<f64>,
    pub image_to_image: bool,
    pub controlnets_used: bool,
    pub model: CallbackModel,
    pub images: Vec<CallbackImage>,
    pub api_key: CallbackApiKey,
}

impl CallbackEvent {
    /// The callback for a finished generation (images filled in), of type `event_type`, sent at
    /// `at`. `webhook_api_key_masked` is `Some` when the key has a webhook callback API key.
    pub fn new(
        event_type: &'static str,
        generation: &store::Generation,
        api_key: &store::ApiKey,
        webhook_api_key_masked: Option<&str>,
        model: &Model,
        images: &ImageStore,
        at: Millis,
    ) -> CallbackEvent {
        let p = &generation.params;
        let complete = generation.status == store::JobStatus::Complete;
        let init_image = p.init_generation_image_id;
        let object = CallbackGeneration {
            id: generation.id,
            created_at: rfc3339_ms(generation.created_at),
            updated_at: rfc3339_ms(generation.updated_at),
            user_id: generation.user_id,
            public: p.public,
            flagged: false,
            nsfw: false,
            status: generation.status.as_str(),
            core_model: "SD",
            guidance_scale: p.guidance_scale.into(),
            image_height: p.height,
            image_width: p.width,
            inference_steps: p.inference_steps,
            init_generated_image_id: init_image,
            init_image_id: p.init_image_id,
            init_strength: p.init_strength,
            init_type: if init_image.is_some() { Some("GENERATED") } else { p.init_image_id.map(|_| "UPLOADED") },
            init_upscaled_image_id: (),
            model_id: p.model_id,
            negative_prompt: p.negative_prompt.clone(),
            prompt: p.prompt.clone(),
            quantity: p.num_images,
            sd_version: p.sd_version.clone(),
            tiling: p.tiling,
            image_aspect_ratio: (),
            token_cost: 0,
            negative_style_prompt: "",
            seed: p.seed.to_string(),
            scheduler: p.scheduler.clone(),
            preset_style: p.preset_style.clone(),
            prompt_magic: p.prompt_magic,
            canvas_init_image_id: p.canvas.as_ref().map(|c| c.init_id),
            canvas_mask_image_id: p.canvas.as_ref().and_then(|c| c.mask_id),
            canvas_request: p.canvas.is_some(),
            api: true,
            pose_image2_image: false,
            image_prompt_strength: if p.image_prompts.is_empty() {
                None
            } else {
                Some(p.image_prompt_weight.unwrap_or(0.5))
            },
            category: (),
            pose_image2_image_type: (),
            high_contrast: p.high_contrast,
            api_dollar_cost: p.api_credit_cost().to_string(),
            pose_image2_image_weight: (),
            alchemy: p.alchemy,
            contrast_ratio: p.contrast_ratio,
            high_resolution: p.high_resolution,
            expanded_domain: p.expanded_domain,
            prompt_magic_version: p.prompt_magic_version.clone(),
            unzoom: (),
            unzoom_amount: (),
            api_key_id: api_key.id,
            photo_real: p.photo_real,
            prompt_magic_strength: p.prompt_magic_strength,
            photo_real_strength: p.photo_real_strength,
            image_to_image: init_image.is_some() || p.init_image_id.is_some(),
            controlnets_used: !p.controlnets.is_empty(),
            model: CallbackModel::new(model),
            images: if complete {
                generation.images.iter().map(|image| CallbackImage::new(image, generation, images)).collect()
            } else {
                Vec::new()
            },
            api_key: CallbackApiKey {
                id: api_key.id,
                created_at: rfc3339_ms(api_key.created_at),
                user_id: api_key.user_id,
                key: MASKED_API_KEY,
                last_used: rfc3339_ms(api_key.last_used_at.unwrap_or(generation.created_at)),
                name: api_key.name.clone(),
                key_type: "PRODUCTION",
                webhook_callback_url: api_key.webhook_url.clone(),
                webhook_callback_api_key: webhook_api_key_masked.map(str::to_string),
            },
        };
        CallbackEvent {
            event_type,
            object: "generation",
            timestamp: at,
            api_version: "v1",
            data: CallbackData { object },
        }
    }
}

/// An image of a complete generation in the callback.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackImage {
    pub id: ImageId,
    pub created_at: String,
    pub updated_at: String,
    pub user_id: UserId,
    pub url: String,
    pub generation_id: GenerationId,
    pub nobg_id: Null,
    pub nsfw: bool,
    pub like_count: u32,
    pub trending_score: u32,
    pub public: bool,
}

impl CallbackImage {
    pub fn new(image: &store::Image, generation: &store::Generation, images: &ImageStore) -> CallbackImage {
        CallbackImage {
            id: image.id,
            created_at: rfc3339_ms(image.created_at),
            updated_at: rfc3339_ms(image.created_at),
            user_id: image.user_id,
            url: images.url(&image.storage_key),
            generation_id: generation.id,
            nobg_id: (),
            nsfw: false,
            like_count: 0,
            trending_score: 0,
            public: generation.params.public,
        }
    }
}

/// The generation's model in the callback.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackModel {
    pub id: Uuid,
    pub created_at: String,
    pub updated_at: String,
    pub name: String,
    pub description: String,
    pub public: bool,
    pub user_id: &'static str,
    pub flagged: bool,
    pub nsfw: bool,
    pub official: bool,
    pub status: &'static str,
    pub class_prompt: Null,
    pub core_model: &'static str,
    pub init_dataset_id: Null,
    pub instance_prompt: Null,
    pub sd_version: String,
    pub training_epoch: Null,
    pub training_steps: Null,
    pub token_cost: Null,
    pub batch_size: u32,
    pub learning_rate: Null,
    #[serde(rename = "type")]
    pub model_type: &'static str,
    pub model_height: u32,
    pub model_width: u32,
    pub leonardo_instance_prompt: Null,
    pub training_strength: &'static str,
    pub featured: bool,
    pub featured_image_id: Null,
    pub featured_position: u32,
    pub api: bool,
    pub favourite_count: u32,
    pub image_count: u32,
    pub enhanced_moderation: bool,
    pub api_dollar_cost: Null,
    pub api_key_id: Null,
    #[serde(rename = "modelLRN")]
    pub model_lrn: Null,
}

impl CallbackModel {
    pub fn new(model: &Model) -> CallbackModel {
        CallbackModel {
            id: model.id,
            created_at: rfc3339_ms(model.created_at),
            updated_at: rfc3339_ms(model.created_at),
            name: model.name.clone(),
            description: model.description.clone(),
            public: true,
            user_id: PLATFORM_USER_ID,
            flagged: false,
            nsfw: model.nsfw,
            official: true,
            status: "COMPLETE",
            class_prompt: (),
            core_model: "SD",
            init_dataset_id: (),
            instance_prompt: (),
            sd_version: model.sd_version.clone(),
            training_epoch: (),
            training_steps: (),
            token_cost: (),
            batch_size: 4,
            learning_rate: (),
            model_type: "GENERAL",
            model_height: model.height,
            model_width: model.width,
            leonardo_instance_prompt: (),
            training_strength: "MEDIUM",
            featured: model.featured,
            featured_image_id: (),
            featured_position: u32::from(model.featured),
            api: false,
            favourite_count: 0,
            image_count: 0,
            enhanced_moderation: false,
            api_dollar_cost: (),
            api_key_id: (),
            model_lrn: (),
        }
    }
}

/// The API key that made the generation, in the callback, its secrets masked.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackApiKey {
    pub id: ApiKeyId,
    pub created_at: String,
    pub user_id: UserId,
    pub key: &'static str,
    pub last_used: String,
    pub name: String,
    #[serde(rename = "type")]
    pub key_type: &'static str,
    pub webhook_callback_url: Option<String>,
    pub webhook_callback_api_key: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The command line's `--json` output
// ---------------------------------------------------------------------------------------------

/// A user, as `easel users create|list --json` print it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub api_concurrency_slots: u32,
    pub created_at: String,
}

impl User {
    pub fn new(user: &store::User) -> User {
        User {
            id: user.id,
            username: user.username.clone(),
            api_concurrency_slots: user.api_concurrency_slots,
            created_at: rfc3339_ms(user.created_at),
        }
    }
}

/// An API key, as `easel keys list --json` prints it: never a secret, only whether a webhook
/// callback API key is set (masked).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub user_id: UserId,
    pub name: String,
    pub created_at: String,
    pub last_used: Option<String>,
    pub webhook_callback_url: Option<String>,
    pub webhook_callback_api_key: Option<String>,
    /// The webhook's state, when the key has one (see [`WebhookState`]).
    pub webhook: Option<WebhookState>,
    /// The key itself, masked: `********` and its last four characters.
    pub masked_key: String,
    /// Whether it may list, create, rotate and delete its user's keys.
    pub manage_keys: bool,
}

impl ApiKey {
    pub fn new(key: &store::ApiKey) -> ApiKey {
        ApiKey {
            id: key.id,
            user_id: key.user_id,
            name: key.name.clone(),
            created_at: rfc3339_ms(key.created_at),
            last_used: key.last_used_at.map(rfc3339_ms),
            webhook_callback_url: key.webhook_url.clone(),
            webhook_callback_api_key: key.webhook_api_key_sealed.as_ref().map(|_| mask("")),
            webhook: key.webhook_url.is_some().then(|| WebhookState::new(key)),
            masked_key: format!("********{}", key.key_hint.as_deref().unwrap_or_default()),
            manage_keys: key.manage_keys,
        }
    }
}

/// A key's webhook: `GET /webhook`, `POST /webhook/enable` and the keys listing. `state` is
/// `active` (the last attempt succeeded, or none was made), `failing` (every attempt has failed
/// since `failingSince`) or `disabled` (since `disabledAt`, for failing `webhook.disable_after`:
/// its deliveries are held until it is re-enabled); `none` when the key has no webhook URL.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookState {
    pub url: Option<String>,
    #[schema(schema_with = schema::webhook_state)]
    pub state: &'static str,
    pub failing_since: Option<String>,
    pub disabled_at: Option<String>,
}

impl WebhookState {
    pub fn new(key: &store::ApiKey) -> WebhookState {
        let state = match (&key.webhook_url, key.webhook_disabled_at, key.webhook_failing_since) {
            (None, _, _) => "none",
            (Some(_), Some(_), _) => "disabled",
            (Some(_), None, Some(_)) => "failing",
            (Some(_), None, None) => "active",
        };
        WebhookState {
            url: key.webhook_url.clone(),
            state,
            failing_since: key.webhook_failing_since.map(rfc3339_ms),
            disabled_at: key.webhook_disabled_at.map(rfc3339_ms),
        }
    }
}

/// A new API key, as `easel keys create --json` prints it: the listing's keys, then the key and
/// its signing secret (shown this once).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub record: ApiKey,
    pub key: String,
    pub signing_secret: String,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey").field("record", &self.record).finish_non_exhaustive()
    }
}

/// `easel keys delete --json` and `DELETE /keys/{id}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedApiKey {
    pub id: ApiKeyId,
    pub deleted: bool,
}

/// `GET /keys`: the caller's user's live keys, oldest first, and which one is the caller's.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKey>,
    pub current_key_id: ApiKeyId,
}

/// `POST /keys/{id}/rotate`: the replacement key, shown once, with the key it replaces (still
/// live until deleted). `signingSecret` is a new secret when one was asked for, else `null`: the
/// replacement signs with the old key's secret, which is not shown again.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedApiKey {
    #[serde(flatten)]
    pub record: ApiKey,
    pub key: String,
    pub signing_secret: Option<String>,
    pub signing_secret_kept: bool,
    pub replaces: ApiKeyId,
}

impl std::fmt::Debug for RotatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedApiKey")
            .field("record", &self.record)
            .field("replaces", &self.replaces)
            .finish_non_exhaustive()
    }
}

/// `easel deliveries retry --json`: how many deliveries were scheduled again.
#[derive(Clone, Debug, Serialize)]
pub struct Retried {
    pub retried: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_integers_when_integral() {
        let json = |n: f64| serde_json::to_string(&Number::from(n)).unwrap();
        assert_eq!(json(7.0), "7");
        assert_eq!(json(7.5), "7.5");
        assert_eq!(json(-3.0), "-3");
        // Beyond 1e15 a number is printed as it is.
        assert_eq!(json(1e20), serde_json::to_string(&1e20).unwrap());
    }

    #[test]
    fn null_and_empty_list_print_as_json_null_and_empty_array() {
        #[derive(Serialize)]
        struct Shape {
            nothing: Null,
            none: EmptyList,
        }
        assert_eq!(serde_json::to_string(&Shape { nothing: (), none: [] }).unwrap(), r#"{"nothing":null,"none":[]}"#);
    }
}

// ---------------------------------------------------------------------------------------------
// Inference backends: `easel backends list --json` and the `backends` of `/healthz`
// ---------------------------------------------------------------------------------------------

/// One `[[backends]]` entry as the database sees it (every node's view).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    pub name: String,
    pub kind: &'static str,
    /// Without any password.
    pub url: String,
    /// `healthy` when the last check of every node that checked it passed, `unhealthy` when one
    /// failed, `unknown` before any node checked it.
    pub health: &'static str,
    /// Jobs running on it now, all nodes together, and how many it may run.
    pub running: u64,
    pub max_concurrent: u32,
    /// Jobs waiting for its models (shared with their other backends).
    pub queued: u64,
    pub models: Vec<BackendModel>,
    pub nodes: Vec<BackendNodeHealth>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendModel {
    pub id: Uuid,
    pub name: String,
    pub queued: u64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendNodeHealth {
    pub node_id: String,
    pub healthy: bool,
    pub checked_at: String,
}

impl BackendStatus {
    /// The status of each of `backends` from `overview`, at `now`. A node's view counts while it
    /// is fresh (checked within three health intervals, and at least a minute): nodes that
    /// stopped or restarted (under a new node id) drop out.
    pub fn all(
        backends: &[crate::config::BackendConfig],
        catalogue: &crate::models::Catalogue,
        overview: &store::BackendOverview,
        now: Millis,
    ) -> Vec<BackendStatus> {
        backends
            .iter()
            .map(|backend| {
                let models: Vec<BackendModel> = catalogue
                    .list()
                    .into_iter()
                    .filter(|model| model.backends.contains(&backend.name))
                    .map(|model| BackendModel {
                        id: model.id,
                        name: model.name.clone(),
                        queued: overview.pending_by_model.get(&model.id.to_string()).copied().unwrap_or(0),
                    })
                    .collect();
                let fresh = (backend.health_interval * 3).max(std::time::Duration::from_secs(60)).as_millis() as Millis;
                let rows: Vec<&store::BackendHealth> = overview
                    .health
                    .iter()
                    .filter(|row| row.name == backend.name && now - row.checked_at <= fresh)
                    .collect();
                let health = if rows.is_empty() {
                    "unknown"
                } else if rows.iter().all(|row| row.healthy) {
                    "healthy"
                } else {
                    "unhealthy"
                };
                let last = rows.iter().filter(|row| row.last_error_at.is_some()).max_by_key(|row| row.last_error_at);
                BackendStatus {
                    name: backend.name.clone(),
                    kind: backend.kind.as_str(),
                    url: crate::config::redact_url(&backend.url),
                    health,
                    running: overview.running.get(&backend.name).copied().unwrap_or(0),
                    max_concurrent: backend.max_concurrent,
                    queued: models.iter().map(|model| model.queued).sum(),
                    models,
                    nodes: rows
                        .iter()
                        .map(|row| BackendNodeHealth {
                            node_id: row.node_id.clone(),
                            healthy: row.healthy,
                            checked_at: rfc3339_ms(row.checked_at),
                        })
                        .collect(),
                    last_error: last.and_then(|row| row.last_error.clone()),
                    last_error_at: last.and_then(|row| row.last_error_at).map(rfc3339_ms),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod backend_status_tests {
    use super::*;

    #[test]
    fn only_fresh_node_views_count() {
        let backend: crate::config::BackendConfig =
            serde_json::from_value(serde_json::json!({"name": "gpu", "kind": "sdapi", "url": "http://10.0.0.5:7860"}))
                .unwrap();
        let catalogue = crate::models::Catalogue::new(&[]).unwrap();
        let now = 10_000_000;
        let row = |node: &str, healthy: bool, checked_at: Millis| store::BackendHealth {
            name: "gpu".into(),
            node_id: node.into(),
            healthy,
            last_error: (!healthy).then(|| "gpu cannot be reached".into()),
            last_error_at: (!healthy).then_some(checked_at),
            checked_at,
        };
        // A node that stopped an hour ago last saw it down; the live node sees it up.
        let mut overview = store::BackendOverview {
            health: vec![row("node-old", false, now - 3_600_000), row("node-live", true, now - 1_000)],
            ..Default::default()
        };
        let status = &BackendStatus::all(std::slice::from_ref(&backend), &catalogue, &overview, now)[0];
        assert_eq!(status.health, "healthy");
        assert_eq!(status.nodes.len(), 1);
        overview.health.clear();
        assert_eq!(BackendStatus::all(&[backend], &catalogue, &overview, now)[0].health, "unknown");
    }
}

/// `POST /init-image`: `{"uploadInitImage": {"id", "url", "key", "fields"}}`, `fields` a JSON string.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadInitImageResponse {
    pub upload_init_image: InitImageUpload,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct InitImageUpload {
    pub id: Uuid,
    pub url: String,
    pub key: String,
    pub fields: String,
}

/// `POST /canvas-init-image`: the init image's and the mask's uploads side by side.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadCanvasInitImageResponse {
    pub upload_canvas_init_image: CanvasInitImageUpload,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanvasInitImageUpload {
    pub init_image_id: Uuid,
    pub init_url: String,
    pub init_key: String,
    pub init_fields: String,
    pub mask_image_id: Uuid,
    pub mask_url: String,
    pub mask_key: String,
    pub mask_fields: String,
}

/// `GET /init-image/{id}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct InitImageByPk {
    pub init_images_by_pk: Option<InitImageSummary>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitImageSummary {
    pub id: Uuid,
    pub url: String,
    pub created_at: String,
}

impl InitImageSummary {
    pub fn new(image: &store::InitImage, images: &ImageStore) -> InitImageSummary {
        InitImageSummary { id: image.id, url: images.url(&image.storage_key), created_at: rfc3339_ms(image.created_at) }
    }
}

/// `DELETE /init-image/{id}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeleteInitImageByPk {
    pub delete_init_images_by_pk: Option<IdOnly>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct IdOnly {
    pub id: Uuid,
}

/// `GET /models/user/{userId}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CustomModelsOfUser {
    pub custom_models: Vec<ModelById>,
}

/// `GET /elements`: the configured elements.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Elements {
    pub loras: Vec<Element>,
}

/// An element as `listElements` parses it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Element {
    #[serde(rename = "akUUID")]
    pub ak_uuid: String,
    pub name: String,
    pub description: String,
    pub base_model: String,
    pub creator_name: Option<String>,
    pub url_image: Option<String>,
    pub weight_default: i64,
    pub weight_min: i64,
    pub weight_max: i64,
}

impl Element {
    pub fn new(config: &crate::models::ElementConfig) -> Element {
        Element {
            ak_uuid: config.id.to_lowercase(),
            name: config.name.clone(),
            description: config.description.clone(),
            base_model: config.base_model.clone(),
            creator_name: config.creator.clone(),
            url_image: config.image_url.clone(),
            weight_default: config.weight_default,
            weight_min: config.weight_min,
            weight_max: config.weight_max,
        }
    }
}

/// An element applied to a generation (`generation_elements[]`): its position, the element as
/// `listElements` shows it (without `creatorName`, which the SDKs do not read here) and the weight.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerationElement {
    pub id: usize,
    pub lora: GenerationLora,
    pub weight_applied: f64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerationLora {
    #[serde(rename = "akUUID")]
    pub ak_uuid: String,
    pub base_model: String,
    pub description: String,
    pub name: String,
    pub url_image: Option<String>,
    pub weight_default: i64,
    pub weight_max: i64,
    pub weight_min: i64,
}

impl GenerationElement {
    pub fn new((index, applied): (usize, &crate::generation::AppliedElement)) -> GenerationElement {
        let e = &applied.element;
        GenerationElement {
            id: index,
            lora: GenerationLora {
                ak_uuid: e.id.clone(),
                base_model: e.base_model.clone(),
                description: e.description.clone(),
                name: e.name.clone(),
                url_image: e.image_url.clone(),
                weight_default: e.weight_default,
                weight_max: e.weight_max,
                weight_min: e.weight_min,
            },
            weight_applied: applied.weight,
        }
    }
}

/// `GET /elements/{id}`: a trained element; Easel trains none, so always `null`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UserElementByPk {
    #[schema(schema_with = schema::null)]
    pub user_loras_by_pk: Null,
}

/// `GET /elements/user/{userId}`: the user's trained elements (none).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UserElements {
    #[schema(schema_with = schema::empty_list)]
    pub user_loras: Vec<Null>,
}

/// `POST /prompt/random` and `/prompt/improve`: `{"promptGeneration": {"prompt", "apiCreditCost",
/// "cost"}}`. Easel does not charge for prompts.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromptGenerationResponse {
    pub prompt_generation: PromptGeneration,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromptGeneration {
    pub prompt: String,
    pub api_credit_cost: u64,
    pub cost: Cost,
}

impl PromptGenerationResponse {
    pub fn new(prompt: String) -> PromptGenerationResponse {
        PromptGenerationResponse {
            prompt_generation: PromptGeneration { prompt, api_credit_cost: 0, cost: Cost::credits(0) },
        }
    }
}

/// `POST /pricing-calculator`: `{"calculateProductionApiServiceCost": {"cost"}}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PricingResponse {
    pub calculate_production_api_service_cost: PricingCost,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PricingCost {
    pub cost: u64,
}

impl PricingResponse {
    pub fn new(cost: u64) -> PricingResponse {
        PricingResponse { calculate_production_api_service_cost: PricingCost { cost } }
    }
}

/// What a correct receiver concludes about a callback a bin recorded, for one of the bin owner's
/// API keys whose webhook URL is this bin (stored with the request as JSON, read back as is).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackCheck {
    pub api_key_id: ApiKeyId,
    pub api_key_name: String,
    /// Whether `authorization: Bearer ...` equals the key's webhook callback API key (`null`:
    /// the key has none, so there is nothing to match).
    pub bearer_matched: Option<bool>,
    /// The bearer check in words.
    pub bearer: String,
    /// Whether the Standard Webhooks signature verifies with the key's signing secret, within
    /// the timestamp tolerance.
    pub signature_verified: bool,
    /// The signature check in words: `verified`, or why not.
    pub signature: String,
}

/// What a bin answers with.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BinResponseView {
    pub status: u16,
    /// `[name, value]` pairs, in order.
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
    pub delay_ms: u32,
}

impl BinResponseView {
    pub fn new(response: &store::BinResponse) -> BinResponseView {
        BinResponseView {
            status: response.status,
            headers: response.headers.clone(),
            body: String::from_utf8_lossy(&response.body).into_owned(),
            delay_ms: response.delay_ms,
        }
    }
}

/// An inspector bin (`/inspector/bins`, `easel inspect list --json`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BinView {
    pub id: Uuid,
    /// Where to send requests: `{public_url}/inspect/{id}`, with any method and path suffix.
    pub url: String,
    pub user_id: UserId,
    pub created_at: String,
    pub expires_at: String,
    pub response: BinResponseView,
    pub request_count: u64,
    pub stored_bytes: u64,
}

impl BinView {
    pub fn new(bin: &store::Bin, url: String) -> BinView {
        BinView {
            id: bin.id,
            url,
            user_id: bin.user_id,
            created_at: rfc3339_ms(bin.created_at),
            expires_at: rfc3339_ms(bin.expires_at),
            response: BinResponseView::new(&bin.response),
            request_count: bin.request_count,
            stored_bytes: bin.stored_bytes,
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BinList {
    pub bins: Vec<BinView>,
}

/// A request a bin recorded.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapturedRequestView {
    /// The bin's running number of the request (newer is larger): the `before` cursor, the SSE
    /// event id.
    pub seq: i64,
    pub received_at: String,
    pub method: String,
    /// The path after the bin's URL, with the query.
    pub path: String,
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    /// The stored body as text (lossy UTF-8); `bodyBase64` has its exact bytes.
    pub body: String,
    pub body_base64: String,
    /// The whole body's size; `bodyTruncated` when only the first `inspector.body_cap` bytes
    /// were kept.
    pub body_size: i64,
    pub body_truncated: bool,
    /// `ip:port` of the sender, or `in-process` (a callback of this Easel handed over directly).
    pub source: String,
    /// For a callback of the owner's keys calling back this bin: what a receiver must check.
    pub callback_checks: Option<Vec<CallbackCheck>>,
}

impl CapturedRequestView {
    pub fn new(request: &store::CapturedRequest) -> CapturedRequestView {
        use base64::Engine;
        CapturedRequestView {
            seq: request.seq,
            received_at: rfc3339_ms(request.received_at),
            method: request.method.clone(),
            path: request.path.clone(),
            headers: request.headers.clone(),
            body: String::from_utf8_lossy(&request.body).into_owned(),
            body_base64: base64::engine::general_purpose::STANDARD.encode(&request.body),
            body_size: request.body_size,
            body_truncated: request.body_size > request.body.len() as i64,
            source: request.source.clone(),
            callback_checks: request.verification.as_deref().and_then(|text| serde_json::from_str(text).ok()),
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapturedRequestList {
    pub requests: Vec<CapturedRequestView>,
    /// Pass as `before` for the next (older) page; `null` when this page is the last.
    pub next_before: Option<i64>,
}

/// The OpenAPI schemas of fields whose Rust type does not say it all (`/openapi.json`).
pub mod schema {
    use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, Type};

    /// A key that is always `null` ([`super::Null`]).
    pub fn null() -> Object {
        ObjectBuilder::new().schema_type(Type::Null).build()
    }

    fn strings(values: impl IntoIterator<Item = &'static str>) -> Object {
        ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values)).build()
    }

    pub fn job_status() -> Object {
        strings(crate::vocabulary::JOB_STATUSES.iter().copied())
    }

    pub fn delivery_status() -> Object {
        use crate::store::DeliveryStatus::*;
        strings([Pending, Succeeded, Failed].map(|status| status.as_str()))
    }

    /// [`super::WebhookState`]'s `state`.
    pub fn webhook_state() -> Object {
        strings(["active", "failing", "disabled", "none"])
    }

    pub fn error_path() -> Object {
        strings(["$"])
    }

    pub fn error_code() -> Object {
        strings(super::ERROR_CODES.iter().copied())
    }

    /// A list that is always empty.
    pub fn empty_list() -> utoipa::openapi::schema::Array {
        ArrayBuilder::new().items(null()).max_items(Some(0)).build()
    }
}
