//! `/generations`: create, read, list by user, delete.

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, JsonBody, PathText, parse_id};
use crate::clock::{now_ms, rfc3339_ms};
use crate::generation::{FieldError, GenerationParams};
use crate::ids::{GenerationId, UserId};
use crate::images::ImageStore;
use crate::store::{Admission, Generation, JobStatus, Variation};

/// Largest `limit` of `GET /generations/user/{userId}`.
pub const MAX_PAGE: u64 = 100;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/generations", post(create_generation))
        .route("/generations/{id}", get(get_generation).delete(delete_generation))
        .route("/generations/user/{user_id}", get(list_generations))
}

async fn create_generation(
    State(state): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let body = body.ok_or_else(|| FieldError::new("$", "a JSON body with at least `prompt` is required"))?;
    let params = GenerationParams::parse(&body, &state.catalogue, |max| fastrand::u64(0..=max))?;
    if let Some(init) = params.init_generation_image_id
        && state.store.get_image(caller.user.id, init).await?.is_none()
    {
        return Err(FieldError::new(
            "init_generation_image_id",
            format!("`init_generation_image_id`: there is no image {init} among your generations"),
        )
        .into());
    }
    let now = now_ms();
    let cost = params.api_credit_cost();
    let generation = Generation {
        id: GenerationId::random(),
        user_id: caller.user.id,
        api_key_id: caller.key.id,
        status: JobStatus::Pending,
        params,
        failure_reason: None,
        created_at: now,
        updated_at: now,
        images: Vec::new(),
    };
    match state.store.create_generation(&generation, caller.user.api_concurrency_slots).await? {
        Admission::Accepted => {}
        Admission::SourceMissing => {
            return Err(FieldError::new("init_generation_image_id", "the init image no longer exists").into());
        }
        Admission::SlotsFull { slots } => {
            return Err(ApiError::SlotsFull { slots, retry_after_seconds: state.api.retry_after_seconds });
        }
    }
    state.wake_render_workers();
    tracing::info!(generation.id = %generation.id, user.id = %caller.user.id, "generation queued");
    Ok(Json(json!({"sdGenerationJob": {
        "generationId": generation.id,
        "apiCreditCost": cost,
        "cost": {"amount": cost.to_string(), "unit": "CREDITS"},
    }})))
}

async fn get_generation(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<Value>> {
    let id: GenerationId = parse_id("id", &id)?;
    let generation = state.store.get_generation(caller.user.id, id).await?;
    Ok(Json(json!({"generations_by_pk": generation.map(|g| generation_json(&g, &state.images))})))
}

async fn delete_generation(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<Value>> {
    let id: GenerationId = parse_id("id", &id)?;
    let Some(storage_keys) = state.store.delete_generation(caller.user.id, id).await? else {
        return Ok(Json(json!({"delete_generations_by_pk": null})));
    };
    if let Err(e) = state.images.delete(&storage_keys).await {
        // The generation is gone; a file left behind is only wasted space, so the delete succeeds.
        tracing::warn!(generation.id = %id, error.message = %e, "cannot delete the images of a deleted generation");
    }
    tracing::info!(generation.id = %id, "generation deleted");
    Ok(Json(json!({"delete_generations_by_pk": {"id": id}})))
}

async fn list_generations(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(user_id): PathText,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let user_id: UserId = parse_id("userId", &user_id)?;
    let number = |name: &str, default: u64, min: u64, max: u64| -> Result<u64, FieldError> {
        match query.get(name) {
            None => Ok(default),
            Some(text) => text.parse::<u64>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
                FieldError::new(name, format!("`{name}` must be an integer between {min} and {max} (got {text:?})"))
            }),
        }
    };
    let limit = number("limit", 10, 1, MAX_PAGE)?;
    let offset = number("offset", 0, 0, i64::MAX as u64)?;
    // Another user's generations are answered as if there were none.
    let generations = if user_id == caller.user.id {
        state.store.list_generations(user_id, offset, limit).await?
    } else {
        Vec::new()
    };
    let list: Vec<Value> = generations.iter().map(|g| generation_json(g, &state.images)).collect();
    Ok(Json(json!({ "generations": list })))
}

/// A generation as `generations_by_pk` and `generations[]` show it: only keys the SDKs know, `null`
/// only where they allow it, `seed` an integer.
fn generation_json(generation: &Generation, images: &ImageStore) -> Value {
    let p = &generation.params;
    let mut value = json!({
        "id": generation.id,
        "status": generation.status.as_str(),
        "createdAt": rfc3339_ms(generation.created_at),
        "prompt": p.prompt,
        "negativePrompt": p.negative_prompt,
        "modelId": p.model_id,
        "imageHeight": p.height,
        "imageWidth": p.width,
        "inferenceSteps": p.inference_steps,
        "guidanceScale": p.guidance_scale,
        "seed": p.seed,
        "public": p.public,
        "scheduler": p.scheduler,
        "sdVersion": p.sd_version,
        "presetStyle": p.preset_style,
        "initStrength": p.init_strength,
        "photoReal": p.photo_real,
        "photoRealStrength": p.photo_real_strength,
        "promptMagic": p.prompt_magic,
        "promptMagicStrength": p.prompt_magic_strength,
        "promptMagicVersion": p.prompt_magic_version,
        "ultra": p.ultra,
        "generated_images": generation.images.iter().map(|image| json!({
            "id": image.id,
            "url": images.url(&image.storage_key),
            "nsfw": false,
            "likeCount": 0,
            "motionMP4URL": null,
            "generated_image_variation_generics":
                image.variations.iter().map(|v| variation_json(v, images)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "generation_elements": [],
    });
    if let Some(reason) = &generation.failure_reason {
        value["failureReason"] = json!(reason);
    }
    value
}

/// A variation as `generated_image_variation_generic(s)` shows it.
pub fn variation_json(variation: &Variation, images: &ImageStore) -> Value {
    json!({
        "id": variation.id,
        "createdAt": rfc3339_ms(variation.created_at),
        "status": variation.status.as_str(),
        "transformType": variation.transform_type,
        "url": variation.storage_key.as_deref().map(|key| images.url(key)),
    })
}
