//! `POST /pricing-calculator`: the API credits a job would cost, computed by the code that sets
//! `apiCreditCost` on real jobs (`GenerationParams::api_credit_cost`), so the two always agree.
//! Easel prices the services it serves: `IMAGE_GENERATION`, `UNIVERSAL_UPSCALER` (by the
//! megapixels of the result) and `UNIVERSAL_UPSCALER_ULTRA` (by the input's size and the
//! multiplier), the last two through `Transform::api_credit_cost` / `universal_upscale_cost`.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiContext;
use super::error::ApiResult;
use super::extract::{Caller, JsonBody};
use crate::generation::{Body, FieldError, GenerationParams};
use crate::records::{Transform, UniversalUpscale, universal_upscale_cost};
use crate::wire;

const SERVICE: &str = "IMAGE_GENERATION";
const UNIVERSAL: &str = "UNIVERSAL_UPSCALER";
const UNIVERSAL_ULTRA: &str = "UNIVERSAL_UPSCALER_ULTRA";
pub(super) const SERVICES: &[&str] = &[SERVICE, UNIVERSAL, UNIVERSAL_ULTRA];

/// The pricing fields and the `createGeneration` fields they stand for.
const FIELDS: &[(&str, &str)] = &[
    ("imageWidth", "width"),
    ("imageHeight", "height"),
    ("numImages", "num_images"),
    ("inferenceSteps", "num_inference_steps"),
    ("alchemyMode", "alchemy"),
    ("highResolution", "highResolution"),
    ("promptMagic", "promptMagic"),
    ("promptMagicStrength", "promptMagicStrength"),
    ("promptMagicVersion", "promptMagicVersion"),
    ("photoRealMode", "photoReal"),
    ("photoRealStrength", "photoRealStrength"),
    ("photoRealVersion", "photoRealVersion"),
    ("isUltra", "ultra"),
];

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(pricing_calculator))
}

#[utoipa::path(
    post,
    path = "/pricing-calculator",
    tag = "pricing",
    operation_id = "pricingCalculator",
    security(("bearer" = [])),
    request_body = crate::http::requests::PricingRequest,
    responses(
        (status = 200, description = "The cost in API credits", body = wire::PricingResponse)
    )
)]
async fn pricing_calculator(
    State(state): State<ApiContext>,
    _caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::PricingResponse>> {
    let body = body.unwrap_or(Value::Object(Map::new()));
    let fields = Body::of(&body)?;
    let service = fields.string("service")?.unwrap_or_else(|| SERVICE.to_string());
    let service = service.as_str();
    if !SERVICES.contains(&service) {
        return Err(FieldError::new(
            "service",
            format!("`service` {service:?} is not priced by Easel: it serves (and prices) {}", SERVICES.join(", ")),
        )
        .into());
    }
    let service_params = match fields.get("serviceParams") {
        None => None,
        Some(Value::Object(params)) => params.get(service),
        Some(_) => return Err(FieldError::new("serviceParams", "`serviceParams` must be an object").into()),
    };
    let params = match service_params {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(params)) => params.clone(),
        Some(_) => {
            return Err(FieldError::new("serviceParams", format!("`serviceParams.{service}` must be an object")).into());
        }
    };
    let cost = match service {
        UNIVERSAL => universal_cost(&params)?,
        UNIVERSAL_ULTRA => universal_ultra_cost(&params)?,
        _ => generation_cost(&state, &params)?,
    };
    Ok(Json(wire::PricingResponse::new(cost)))
}

/// `UNIVERSAL_UPSCALER {megapixel}`: the megapixels of the result (1 when not given).
fn universal_cost(params: &Map<String, Value>) -> Result<u64, FieldError> {
    let params = Body(params);
    let field = format!("serviceParams.{UNIVERSAL}.megapixel");
    let megapixels = params.integer("megapixel", 1, 100).map_err(|e| rename(e, "megapixel", &field))?.unwrap_or(1);
    Ok(universal_upscale_cost(megapixels as f64))
}

/// `UNIVERSAL_UPSCALER_ULTRA {inputWidth, inputHeight, upscaleMultiplier}`: priced as the
/// universal upscale of a picture that size (1024 x 1024 and 1.5 when not given).
fn universal_ultra_cost(params: &Map<String, Value>) -> Result<u64, FieldError> {
    let params = Body(params);
    let field = |name: &str| format!("serviceParams.{UNIVERSAL_ULTRA}.{name}");
    let side = |name: &str| {
        params.integer(name, 1, 16_384).map_err(|e| rename(e, name, &field(name))).map(|n| n.unwrap_or(1024) as u32)
    };
    let (width, height) = (side("inputWidth")?, side("inputHeight")?);
    let multiplier = params
        .number_in("upscaleMultiplier", 1.0, 2.0)
        .map_err(|e| rename(e, "upscaleMultiplier", &field("upscaleMultiplier")))?
        .unwrap_or(1.5);
    let transform = Transform::UniversalUpscale(UniversalUpscale {
        multiplier,
        creativity_strength: None,
        detail_contrast: None,
        similarity: None,
        style: None,
        ultra_style: None,
        prompt: None,
    });
    Ok(transform.api_credit_cost(width, height))
}

/// An error about `field` reworded to name its full path in the pricing request.
fn rename(error: FieldError, field: &str, path: &str) -> FieldError {
    FieldError::new(path, error.message.replace(&format!("`{field}`"), &format!("`{path}`")))
}

/// `IMAGE_GENERATION`: the cost of the equivalent generation.
fn generation_cost(state: &ApiContext, params: &Map<String, Value>) -> Result<u64, FieldError> {
    // The equivalent generation, validated and priced exactly as a real one.
    let mut generation = Map::new();
    generation.insert("prompt".into(), json!("pricing"));
    for (pricing, field) in FIELDS {
        if let Some(value) = params.get(*pricing).filter(|v| !v.is_null()) {
            generation.insert(field.to_string(), value.clone());
        }
    }
    let parsed = GenerationParams::parse(&Value::Object(generation), &state.catalogue, |_| 0).map_err(|error| {
        match FIELDS.iter().find(|(_, field)| *field == error.field) {
            Some((pricing, field)) => rename(error, field, &format!("serviceParams.{SERVICE}.{pricing}")),
            None => error,
        }
    })?;
    Ok(parsed.api_credit_cost())
}
