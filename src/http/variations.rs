//! `/variations`: transforms of a generated image (or of a complete variation's result), each a
//! job that takes one of the user's concurrency slots like a generation: the 2x upscale,
//! background removal, unzoom and the universal upscaler; and reading a variation back.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, JsonBody, PathText, parse_id};
use crate::clock::now_ms;
use crate::generation::{Body, FieldError};
use crate::ids::{ImageId, VariationId};
use crate::store::{Admission, Image, JobStatus, Transform, UniversalUpscale, Variation};
use crate::wire;

/// `upscalerStyle` values, as the SDKs spell them.
pub(super) const UPSCALER_STYLES: &[&str] = &["GENERAL", "CINEMATIC", "2D ART & ILLUSTRATION", "CG ART & GAME ASSETS"];
/// `ultraUpscaleStyle` values.
pub(super) const ULTRA_STYLES: &[&str] = &["ARTISTIC", "REALISTIC"];
/// The universal upscaler's multiplier when none is given, and its range.
const DEFAULT_MULTIPLIER: f64 = 1.5;
const MULTIPLIERS: (f64, f64) = (1.0, 2.0);
const MAX_PROMPT_CHARS: usize = 1500;

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(create_upscale))
        .routes(routes!(create_nobg))
        .routes(routes!(create_unzoom))
        .routes(routes!(create_universal_upscale))
        .routes(routes!(get_variation))
}

/// What a variation transforms: a generated image, or a complete variation's result.
enum Source {
    Image(ImageId),
    Variation(VariationId),
}

/// The request body as an object (`{}` when empty).
fn body_of(body: Option<Value>) -> Result<Value, ApiError> {
    let body = body.unwrap_or_else(|| Value::Object(Map::new()));
    Body::of(&body)?;
    Ok(body)
}

/// `id`, an image's id, or a variation's when `isVariation` is true (`nobg`, `unzoom`).
fn id_source(body: &Value, what: &str, variations_allowed: bool) -> Result<(&'static str, Source), ApiError> {
    let body = Body::of(body)?;
    let text =
        body.string("id")?.ok_or_else(|| FieldError::new("id", format!("`id` (the id of the {what}) is required")))?;
    if variations_allowed && body.boolean("isVariation")? == Some(true) {
        return Ok(("id", Source::Variation(parse_id("id", &text)?)));
    }
    Ok(("id", Source::Image(parse_id("id", &text)?)))
}

#[utoipa::path(
    post,
    path = "/variations/upscale",
    tag = "variations",
    operation_id = "createVariationUpscale",
    security(("bearer" = [])),
    request_body = crate::http::requests::ImageVariationRequest,
    responses(
        (status = 200, description = "The job (`sdUpscaleJob`)", body = wire::VariationJobResponse),
        (status = 429, description = "All the caller's concurrency slots are taken (code `concurrency-limit`)",
         body = wire::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait")))
    )
)]
async fn create_upscale(
    State(state): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::VariationJobResponse>> {
    let body = body_of(body)?;
    let (field, source) = id_source(&body, "image to upscale", false)?;
    create(&state, &caller, field, source, Transform::Upscale).await
}

#[utoipa::path(
    post,
    path = "/variations/nobg",
    tag = "variations",
    operation_id = "createVariationNoBG",
    security(("bearer" = [])),
    request_body = crate::http::requests::VariationSourceRequest,
    responses(
        (status = 200, description = "The job (`sdNobgJob`)", body = wire::VariationJobResponse),
        (status = 429, description = "All the caller's concurrency slots are taken (code `concurrency-limit`)",
         body = wire::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait")))
    )
)]
async fn create_nobg(
    State(state): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::VariationJobResponse>> {
    let body = body_of(body)?;
    let (field, source) = id_source(&body, "image whose background to remove", true)?;
    create(&state, &caller, field, source, Transform::NoBackground).await
}

#[utoipa::path(
    post,
    path = "/variations/unzoom",
    tag = "variations",
    operation_id = "createVariationUnzoom",
    security(("bearer" = [])),
    request_body = crate::http::requests::VariationSourceRequest,
    responses(
        (status = 200, description = "The job (`sdUnzoomJob`)", body = wire::VariationJobResponse),
        (status = 429, description = "All the caller's concurrency slots are taken (code `concurrency-limit`)",
         body = wire::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait")))
    )
)]
async fn create_unzoom(
    State(state): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::VariationJobResponse>> {
    let body = body_of(body)?;
    let (field, source) = id_source(&body, "image to unzoom", true)?;
    create(&state, &caller, field, source, Transform::Unzoom).await
}

#[utoipa::path(
    post,
    path = "/variations/universal-upscaler",
    tag = "variations",
    operation_id = "createUniversalUpscalerJob",
    security(("bearer" = [])),
    request_body = crate::http::requests::UniversalUpscalerRequest,
    responses(
        (status = 200, description = "The job (`universalUpscaler`)", body = wire::VariationJobResponse),
        (status = 429, description = "All the caller's concurrency slots are taken (code `concurrency-limit`)",
         body = wire::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait")))
    )
)]
async fn create_universal_upscale(
    State(state): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::VariationJobResponse>> {
    let body = body_of(body)?;
    let body = Body::of(&body)?;
    let mut sources = Vec::new();
    for field in ["generatedImageId", "variationId", "initImageId"] {
        if let Some(text) = body.string(field)? {
            sources.push((field, text));
        }
    }
    let (field, text) = match sources.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(FieldError::new(
                "generatedImageId",
                "one of `generatedImageId`, `variationId` or `initImageId` is required",
            )
            .into());
        }
        [first, second, ..] => {
            return Err(FieldError::new(
                second.0,
                format!(
                    "give one of `generatedImageId`, `variationId` and `initImageId`, not both `{}` and `{}`",
                    first.0, second.0
                ),
            )
            .into());
        }
    };
    let source = match field {
        "generatedImageId" => Source::Image(parse_id(field, &text)?),
        "variationId" => Source::Variation(parse_id(field, &text)?),
        _ => {
            return Err(FieldError::new(
                field,
                "`initImageId`: uploaded init images are not served by this server yet; upscale a generated image \
                 (`generatedImageId`) or a variation (`variationId`)",
            )
            .into());
        }
    };
    let one_of = |field: &str, allowed: &[&str]| -> Result<Option<String>, FieldError> {
        match body.string(field)? {
            Some(value) if !allowed.contains(&value.as_str()) => {
                Err(FieldError::new(field, format!("`{field}` must be one of {} (got {value:?})", allowed.join(", "))))
            }
            other => Ok(other),
        }
    };
    let style = one_of("upscalerStyle", UPSCALER_STYLES)?;
    let ultra_style = one_of("ultraUpscaleStyle", ULTRA_STYLES)?;
    if style.is_some() && ultra_style.is_some() {
        return Err(FieldError::new(
            "ultraUpscaleStyle",
            "`upscalerStyle` and `ultraUpscaleStyle` cannot be used together",
        )
        .into());
    }
    let strength = |field: &str| body.integer(field, 1, 10).map(|n| n.map(|n| n as u8));
    let prompt = body.string("prompt")?;
    if prompt.as_ref().is_some_and(|p| p.chars().count() > MAX_PROMPT_CHARS) {
        return Err(FieldError::new("prompt", format!("`prompt` must be at most {MAX_PROMPT_CHARS} characters")).into());
    }
    let settings = UniversalUpscale {
        multiplier: body.number_in("upscaleMultiplier", MULTIPLIERS.0, MULTIPLIERS.1)?.unwrap_or(DEFAULT_MULTIPLIER),
        creativity_strength: strength("creativityStrength")?,
        detail_contrast: strength("detailContrast")?,
        similarity: strength("similarity")?,
        style,
        ultra_style,
        prompt,
    };
    create(&state, &caller, field, source, Transform::UniversalUpscale(settings)).await
}

/// Queues `transform` of `source` for the caller, within their concurrency slots.
async fn create(
    state: &ApiContext,
    caller: &Caller,
    field: &str,
    source: Source,
    transform: Transform,
) -> ApiResult<Json<wire::VariationJobResponse>> {
    let user = caller.user.id;
    // Another user's image or variation is answered exactly like one that does not exist (or
    // one deleted between this read and the insert, which checks again).
    let (image, source_key, missing) = match source {
        Source::Image(id) => {
            let missing = FieldError::new(field, format!("`{field}`: there is no image {id} among your generations"));
            match state.store.get_image(user, id).await? {
                Some(image) => (image, None, missing),
                None => return Err(missing.into()),
            }
        }
        Source::Variation(id) => {
            let missing = FieldError::new(field, format!("`{field}`: there is no variation {id} among yours"));
            let Some(variation) = state.store.get_variation(user, id).await? else {
                return Err(missing.into());
            };
            let Some(key) = variation.storage_key.filter(|_| variation.status == JobStatus::Complete) else {
                return Err(FieldError::new(
                    field,
                    format!(
                        "`{field}`: variation {id} is {}, not COMPLETE: it has no picture to transform yet",
                        variation.status.as_str()
                    ),
                )
                .into());
            };
            match state.store.get_image(user, variation.image_id).await? {
                Some(image) => (image, Some(key), missing),
                None => return Err(missing.into()),
            }
        }
    };
    let (width, height) = source_size(state, &image, source_key.as_deref()).await?;
    let credits = transform.api_credit_cost(width, height);
    let variation = Variation::pending(&image, caller.key.id, transform, source_key, now_ms());
    match state.store.create_variation(&variation, caller.user.api_concurrency_slots).await? {
        Admission::Accepted => {}
        Admission::SourceMissing => return Err(missing.into()),
        Admission::SlotsFull { slots } => {
            return Err(ApiError::SlotsFull { slots, retry_after_seconds: state.api.retry_after_seconds });
        }
    }
    state.wake_render_workers();
    Ok(Json(wire::VariationJobResponse::new(&variation, credits)))
}

/// The size of the picture a variation starts from: the image's, or (for a variation's result)
/// read from the file's header.
async fn source_size(state: &ApiContext, image: &Image, source_key: Option<&str>) -> ApiResult<(u32, u32)> {
    let Some(key) = source_key else {
        return Ok((image.width, image.height));
    };
    let Some(bytes) = state.images.get(key).await? else {
        return Err(ApiError::Invalid(FieldError::new("id", "the variation's picture no longer exists")));
    };
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|reader| reader.into_dimensions().ok())
        .ok_or_else(|| ApiError::Invalid(FieldError::new("id", "the variation's picture cannot be read")))
}

#[utoipa::path(
    get,
    path = "/variations/{id}",
    tag = "variations",
    operation_id = "getVariationById",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The variation's id")),
    responses(
        (status = 200, description = "A list of the variation, or empty", body = wire::VariationList)
    )
)]
async fn get_variation(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<wire::VariationList>> {
    let id: VariationId = parse_id("id", &id)?;
    let variation = state.store.get_variation(caller.user.id, id).await?;
    let list = variation.iter().map(|v| wire::Variation::new(v, &state.images)).collect();
    Ok(Json(wire::VariationList { generated_image_variation_generic: list }))
}
