//! `/generations`: create, read, list by user, delete.

use axum::Json;
use axum::extract::{Query, State};
use std::collections::HashMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, JsonBody, PathText, parse_id, query_number};
use crate::clock::now_ms;
use crate::generation::{FieldError, GenerationParams};
use crate::ids::{GenerationId, ImageId, UserId};
use crate::store::{Admission, Generation};
use crate::wire;

/// Largest `limit` of `GET /generations/user/{userId}`.
pub const MAX_PAGE: u64 = 100;

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(create_generation))
        .routes(routes!(get_generation, delete_generation))
        .routes(routes!(list_generations))
}

/// Queues a generation; its id comes back at once.
#[utoipa::path(
    post,
    path = "/generations",
    tag = "generations",
    operation_id = "createGeneration",
    security(("bearer" = [])),
    request_body = crate::http::requests::CreateGeneration,
    responses(
        (status = 200, description = "The generation is queued", body = wire::SdGenerationJobResponse, links(
            ("getGeneration" = (operation_id = "getGenerationById",
                                parameters(("id" = "$response.body#/sdGenerationJob/generationId")))),
            ("getDeliveries" = (operation_id = "getGenerationDeliveries",
                                parameters(("id" = "$response.body#/sdGenerationJob/generationId")))),
            ("deleteGeneration" = (operation_id = "deleteGenerationById",
                                   parameters(("id" = "$response.body#/sdGenerationJob/generationId")))),
        )),
        (status = 429, description = "All the caller's concurrency slots are taken (code `concurrency-limit`)",
         body = wire::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
async fn create_generation(
    State(state): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::SdGenerationJobResponse>> {
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
    check_guides(&state, &caller, &params).await?;
    let now = now_ms();
    let generation = Generation::pending(caller.user.id, caller.key.id, params, now);
    // With a free render slot here, the job is inserted leased to this node and handed to its
    // workers: no claim, no wake-up (`render::handoff`).
    let reservation = state.render_handoff.as_ref().and_then(|handoff| handoff.reserve(&generation.params.model_id));
    let lease = reservation.as_ref().map(|reservation| reservation.lease());
    match state.store.create_generation(&generation, caller.user.api_concurrency_slots, lease).await? {
        Admission::Accepted => {
            state.metrics.generations_created.inc();
        }
        Admission::SourceMissing => {
            return Err(FieldError::new("init_generation_image_id", "the init image no longer exists").into());
        }
        Admission::SlotsFull { slots } => {
            return Err(ApiError::SlotsFull { slots, retry_after_seconds: state.api.retry_after_seconds });
        }
    }
    tracing::info!(generation.id = %generation.id, user.id = %caller.user.id, "generation queued");
    let answer = wire::SdGenerationJobResponse::new(&generation);
    match reservation {
        Some(reservation) => {
            reservation.hand_over(generation);
            state.metrics.generations_handed_over.inc();
        }
        None => state.wake_render_workers(),
    }
    Ok(Json(answer))
}

/// A generation of the caller with its images, or `null`.
#[utoipa::path(
    get,
    path = "/generations/{id}",
    tag = "generations",
    operation_id = "getGenerationById",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The generation's id")),
    responses((status = 200, description = "The generation, or `null` when the caller has none by that id",
               body = wire::GenerationsByPk))
)]
async fn get_generation(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<wire::GenerationsByPk>> {
    let id: GenerationId = parse_id("id", &id)?;
    let generation = state.store.get_generation(caller.user.id, id).await?;
    Ok(Json(wire::GenerationsByPk { generations_by_pk: generation.map(|g| wire::Generation::new(&g, &state.images)) }))
}

/// Deletes a generation of the caller and its images.
#[utoipa::path(
    delete,
    path = "/generations/{id}",
    tag = "generations",
    operation_id = "deleteGenerationById",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The generation's id")),
    responses((status = 200, description = "The id deleted, or `null` when there was nothing to delete",
               body = wire::DeleteGenerationsByPk))
)]
async fn delete_generation(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<wire::DeleteGenerationsByPk>> {
    let id: GenerationId = parse_id("id", &id)?;
    let Some(storage_keys) = state.store.delete_generation(caller.user.id, id).await? else {
        return Ok(Json(wire::DeleteGenerationsByPk { delete_generations_by_pk: None }));
    };
    if let Err(e) = state.images.delete(&storage_keys).await {
        // The generation is gone; a file left behind is only wasted space, so the delete succeeds.
        tracing::warn!(generation.id = %id, error.message = %e, "cannot delete the images of a deleted generation");
    }
    tracing::info!(generation.id = %id, "generation deleted");
    Ok(Json(wire::DeleteGenerationsByPk { delete_generations_by_pk: Some(wire::DeletedGeneration { id }) }))
}

/// The caller's generations, newest first (another user's id reads as none).
#[utoipa::path(
    get,
    path = "/generations/user/{userId}",
    tag = "generations",
    operation_id = "getGenerationsByUserId",
    security(("bearer" = [])),
    params(
        ("userId" = uuid::Uuid, Path, description = "The caller's user id (`GET /me`)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 100, description = "At most this many (default 10)"),
        ("offset" = Option<u64>, Query, minimum = 0, maximum = 9_223_372_036_854_775_807_u64,
         description = "Skip this many (default 0)"),
    ),
    responses((status = 200, description = "The generations", body = wire::GenerationList))
)]
async fn list_generations(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(user_id): PathText,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<wire::GenerationList>> {
    let user_id: UserId = parse_id("userId", &user_id)?;
    let limit = query_number(&query, "limit", 10, 1, MAX_PAGE)?;
    let offset = query_number(&query, "offset", 0, 0, i64::MAX as u64)?;
    // Another user's generations are answered as if there were none.
    let generations = if user_id == caller.user.id {
        state.store.list_generations(user_id, offset, limit).await?
    } else {
        Vec::new()
    };
    let generations = generations.iter().map(|g| wire::Generation::new(g, &state.images)).collect();
    Ok(Json(wire::GenerationList { generations }))
}

/// The pictures a generation starts from or is guided by: each the caller's, of the right kind,
/// and served by the model's renderer (the built-in one, or backends that take them).
async fn check_guides(state: &ApiContext, caller: &Caller, params: &GenerationParams) -> ApiResult<()> {
    use crate::store::InitImageKind::{CanvasInit, CanvasMask, Init};
    if let Some(id) = params.init_image_id {
        check_init_image(state, caller, "init_image_id", id, &[Init]).await?;
    }
    if let Some(canvas) = &params.canvas {
        check_init_image(state, caller, "canvasInitId", canvas.init_id, &[CanvasInit, Init]).await?;
        if let Some(mask) = canvas.mask_id {
            check_init_image(state, caller, "canvasMaskId", mask, &[CanvasMask]).await?;
        }
    }
    for (index, control) in params.controlnets.iter().enumerate() {
        let field = format!("controlnets[{index}].initImageId");
        if control.init_image_type == "GENERATED" {
            let id = ImageId(control.init_image_id);
            if state.store.get_image(caller.user.id, id).await?.is_none() {
                let message = format!("`{field}`: there is no image {id} among your generations");
                return Err(FieldError::new(&field, message).into());
            }
        } else {
            check_init_image(state, caller, &field, control.init_image_id, &[Init, CanvasInit]).await?;
        }
    }
    for (index, id) in params.image_prompts.iter().enumerate() {
        check_init_image(state, caller, &format!("imagePrompts[{index}]"), *id, &[Init, CanvasInit]).await?;
    }
    if let Some(model) = state.catalogue.get(&params.model_id)
        && !params.elements.is_empty()
    {
        let takes_no_loras = state.backends.iter().find(|backend| {
            model.backends.contains(&backend.name)
                && matches!(backend.kind, crate::config::BackendKind::Cog | crate::config::BackendKind::Comfyui)
        });
        if let Some(backend) = takes_no_loras {
            return Err(FieldError::new(
                "elements",
                format!(
                    "`elements`: the model {} runs on the backend {} ({}), which takes no LoRAs from Easel; \
                     elements work on the built-in renderer and on sdapi and openai (stable-diffusion.cpp) backends",
                    model.name,
                    backend.name,
                    backend.kind.as_str()
                ),
            )
            .into());
        }
    }
    let Some(model) = state.catalogue.get(&params.model_id).filter(|m| !m.backends.is_empty()) else {
        return Ok(());
    };
    // Every backend of the model gets init images; only `sdapi` takes an inpainting mask, and
    // controlnets and image prompts where its configuration maps them to units.
    let backends: Vec<&crate::config::BackendConfig> =
        state.backends.iter().filter(|b| model.backends.contains(&b.name)).collect();
    for (index, control) in params.controlnets.iter().enumerate() {
        if let Some(backend) = backends.iter().find(|b| b.controlnet(control.preprocessor_id).is_none()) {
            let field = format!("controlnets[{index}].preprocessorId");
            let why = if backend.kind == crate::config::BackendKind::Sdapi {
                format!("its `controlnet_models` map no controlnet to preprocessor {}", control.preprocessor_id)
            } else {
                format!("{} backends take no controlnets", backend.kind.as_str())
            };
            return Err(FieldError::new(
                &field,
                format!(
                    "`{field}`: the model {} runs on the backend {}, which cannot serve this controlnet: {why}",
                    model.name, backend.name
                ),
            )
            .into());
        }
    }
    if !params.image_prompts.is_empty()
        && let Some(backend) = backends.iter().find(|b| b.ip_adapter_unit().is_none())
    {
        let why = if backend.kind == crate::config::BackendKind::Sdapi {
            "it has no `ip_adapter` configured".to_string()
        } else {
            format!("{} backends take no image prompts", backend.kind.as_str())
        };
        return Err(FieldError::new(
            "imagePrompts",
            format!(
                "`imagePrompts`: the model {} runs on the backend {}, which cannot serve image prompts: {why}",
                model.name, backend.name
            ),
        )
        .into());
    }
    let all_inpaint = model
        .backends
        .iter()
        .all(|name| state.backends.iter().any(|b| &b.name == name && b.kind == crate::config::BackendKind::Sdapi));
    let masked = params.canvas.as_ref().is_some_and(|c| matches!(c.request_type.as_str(), "INPAINT" | "OUTPAINT"));
    let refused =
        [("canvasRequest", masked && !all_inpaint, "INPAINT and OUTPAINT need backends that inpaint (sdapi)")];
    if let Some((field, _, why)) = refused.iter().find(|(_, refused, _)| *refused) {
        return Err(FieldError::new(
            field,
            format!(
                "`{field}`: the model {} runs on inference backends ({}): {why}; use a model on the built-in \
                 renderer",
                model.name,
                model.backends.join(", ")
            ),
        )
        .into());
    }
    Ok(())
}

/// An uploaded init image a generation may use as `field`: the caller's, of one of `kinds`, and
/// (where this server receives uploads) uploaded. With S3 uploads the bucket alone knows; a file
/// that never arrived fails the generation with that reason.
async fn check_init_image(
    state: &ApiContext,
    caller: &Caller,
    field: &str,
    id: uuid::Uuid,
    kinds: &[crate::store::InitImageKind],
) -> ApiResult<()> {
    let Some(image) = state.store.get_init_image(caller.user.id, id).await? else {
        return Err(FieldError::new(field, format!("`{field}`: there is no init image {id} of yours")).into());
    };
    if !kinds.contains(&image.kind) {
        let made_by = match image.kind {
            crate::store::InitImageKind::Init => "POST /init-image",
            crate::store::InitImageKind::CanvasInit => "POST /canvas-init-image (its init image)",
            crate::store::InitImageKind::CanvasMask => "POST /canvas-init-image (its mask)",
        };
        return Err(
            FieldError::new(field, format!("`{field}`: {id} was made by {made_by}, which cannot serve here")).into()
        );
    }
    if state.uploads.is_local() && image.uploaded_at.is_none() {
        let why = if image.expires_at <= now_ms() {
            format!("its upload policy expired at {} unused", crate::clock::rfc3339_ms(image.expires_at))
        } else {
            "upload the file to the policy's URL first".to_string()
        };
        return Err(FieldError::new(field, format!("`{field}`: init image {id} has not been uploaded: {why}")).into());
    }
    Ok(())
}
