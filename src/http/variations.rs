//! `/variations`: upscale an image (2x), read a variation.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, JsonBody, PathText, parse_id};
use crate::clock::now_ms;
use crate::generation::FieldError;
use crate::ids::{ImageId, VariationId};
use crate::store::{Admission, JobStatus, Variation};
use crate::wire;

/// API credits an upscale costs.
const UPSCALE_COST: u64 = 1;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/variations/upscale", post(create_upscale)).route("/variations/{id}", get(get_variation))
}

async fn create_upscale(
    State(state): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::SdUpscaleJobResponse>> {
    let id_field = body.as_ref().and_then(|b| b.get("id")).filter(|v| !v.is_null());
    let image_id: ImageId = match id_field {
        None => return Err(FieldError::new("id", "`id` (the id of the image to upscale) is required").into()),
        Some(Value::String(text)) => parse_id("id", text)?,
        Some(_) => return Err(FieldError::new("id", "`id` must be a string (an image id)").into()),
    };
    // Another user's image is answered exactly like one that does not exist (or one deleted
    // between this read and the insert, which checks again).
    let missing = || FieldError::new("id", format!("`id`: there is no image {image_id} among your generations"));
    let Some(image) = state.store.get_image(caller.user.id, image_id).await? else {
        return Err(missing().into());
    };
    let now = now_ms();
    let variation = Variation {
        id: VariationId::random(),
        image_id: image.id,
        generation_id: image.generation_id,
        user_id: caller.user.id,
        api_key_id: caller.key.id,
        transform_type: "UPSCALE".into(),
        status: JobStatus::Pending,
        storage_key: None,
        failure_reason: None,
        created_at: now,
        updated_at: now,
    };
    match state.store.create_variation(&variation, caller.user.api_concurrency_slots).await? {
        Admission::Accepted => {}
        Admission::SourceMissing => return Err(missing().into()),
        Admission::SlotsFull { slots } => {
            return Err(ApiError::SlotsFull { slots, retry_after_seconds: state.api.retry_after_seconds });
        }
    }
    state.wake_render_workers();
    Ok(Json(wire::SdUpscaleJobResponse::new(&variation, UPSCALE_COST)))
}

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
