//! `POST /prompt/random` and `POST /prompt/improve` ([`crate::prompts`]).

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, JsonBody};
use crate::generation::{Body, FieldError};
use crate::vocabulary::MAX_PROMPT_CHARS;
use crate::wire;

/// The longest `promptInstructions` accepted.
pub(super) const MAX_INSTRUCTION_CHARS: usize = 1000;

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(random)).routes(routes!(improve))
}

#[utoipa::path(
    post,
    path = "/prompt/random",
    tag = "prompts",
    operation_id = "promptRandom",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A random prompt", body = wire::PromptGenerationResponse),
        (status = 502, description = "The prompt tools' model failed (code `upstream-failed`)", body = wire::ErrorBody)
    )
)]
async fn random(State(state): State<ApiContext>, _caller: Caller) -> ApiResult<Json<wire::PromptGenerationResponse>> {
    let prompt = state.prompts.random(fastrand::u64(..)).await.map_err(|e| ApiError::Upstream(e.to_string()))?;
    Ok(Json(wire::PromptGenerationResponse::new(prompt)))
}

#[utoipa::path(
    post,
    path = "/prompt/improve",
    tag = "prompts",
    operation_id = "promptImprove",
    security(("bearer" = [])),
    request_body = crate::http::requests::ImprovePromptRequest,
    responses(
        (status = 200, description = "The improved prompt", body = wire::PromptGenerationResponse),
        (status = 502, description = "The prompt tools' model failed (code `upstream-failed`)", body = wire::ErrorBody)
    )
)]
async fn improve(
    State(state): State<ApiContext>,
    _caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::PromptGenerationResponse>> {
    let body = body.unwrap_or_else(|| Value::Object(Map::new()));
    let body = Body::of(&body)?;
    let prompt = body.string("prompt")?.filter(|p| !p.trim().is_empty());
    let prompt = prompt.ok_or_else(|| FieldError::new("prompt", "`prompt` (the prompt to improve) is required"))?;
    let too_long =
        |field: &str, max: usize| FieldError::new(field, format!("`{field}` must be at most {max} characters"));
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(too_long("prompt", MAX_PROMPT_CHARS).into());
    }
    let instructions = body.string("promptInstructions")?;
    if instructions.as_ref().is_some_and(|text| text.chars().count() > MAX_INSTRUCTION_CHARS) {
        return Err(too_long("promptInstructions", MAX_INSTRUCTION_CHARS).into());
    }
    let video = body.boolean("isVideo")?.unwrap_or(false);
    let improved = state
        .prompts
        .improve(&prompt, instructions.as_deref(), video)
        .await
        .map_err(|e| ApiError::Upstream(e.to_string()))?;
    Ok(Json(wire::PromptGenerationResponse::new(improved)))
}
