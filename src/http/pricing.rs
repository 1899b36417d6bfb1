//! `POST /pricing-calculator`: the API credits a job would cost, computed by the code that sets
//! `apiCreditCost` on real jobs (`GenerationParams::api_credit_cost`), so the two always agree.
//! Easel prices the service it serves, `IMAGE_GENERATION`.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::ApiContext;
use super::error::ApiResult;
use super::extract::{Caller, JsonBody};
use crate::generation::{FieldError, GenerationParams};
use crate::wire;

const SERVICE: &str = "IMAGE_GENERATION";

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

pub fn router() -> Router<ApiContext> {
    Router::new().route("/pricing-calculator", post(pricing_calculator))
}

async fn pricing_calculator(
    State(state): State<ApiContext>,
    _caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::PricingResponse>> {
    let body = body.unwrap_or(Value::Object(Map::new()));
    let service = body.get("service").and_then(Value::as_str).unwrap_or(SERVICE);
    if service != SERVICE {
        return Err(FieldError::new(
            "service",
            format!("`service` {service:?} is not priced by Easel: it serves (and prices) only {SERVICE}"),
        )
        .into());
    }
    let params = match body.get("serviceParams").and_then(|p| p.get(SERVICE)) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(params)) => params.clone(),
        Some(_) => {
            return Err(FieldError::new("serviceParams", "`serviceParams.IMAGE_GENERATION` must be an object").into());
        }
    };
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
            Some((pricing, field)) => {
                let path = format!("serviceParams.{SERVICE}.{pricing}");
                let message = error.message.replace(&format!("`{field}`"), &format!("`{path}`"));
                FieldError::new(&path, message)
            }
            None => error,
        }
    })?;
    Ok(Json(wire::PricingResponse::new(parsed.api_credit_cost())))
}
