//! Easel's extension next to `/generations/{id}`: the caller's webhook deliveries (all of them, or
//! a generation's), each with its attempt log, and redelivery. Owners only; another user's
//! deliveries do not exist.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, PathText, parse_id, query_number};
use crate::clock::now_ms;
use crate::generation::FieldError;
use crate::ids::{DeliveryId, GenerationId};
use crate::store::{DeliveryFilter, DeliveryStatus, Redelivery};
use crate::webhook::report::delivery_report;
use crate::wire;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/deliveries", get(list_deliveries))
        .route("/generations/{id}/deliveries", get(list_generation_deliveries))
        .route("/deliveries/{id}", get(get_delivery))
        .route("/deliveries/{id}/retry", post(retry_delivery))
}

async fn list_generation_deliveries(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<wire::DeliveryList>> {
    let id: GenerationId = parse_id("id", &id)?;
    let filter = DeliveryFilter { generation: Some(id), user: Some(caller.user.id), status: None, limit: 100 };
    reports(&state, &filter).await
}

/// The caller's deliveries (test callbacks included), newest first, each with its attempt log:
/// `?limit=` (1 to 100, default 20) and `?status=pending|succeeded|failed`.
async fn list_deliveries(
    State(state): State<ApiContext>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<wire::DeliveryList>> {
    let limit = query_number(&query, "limit", 20, 1, 100)? as u32;
    let status = match query.get("status") {
        None => None,
        Some(text) => Some(DeliveryStatus::parse(text).ok_or_else(|| {
            FieldError::new("status", format!("`status` must be pending, succeeded or failed (got {text:?})"))
        })?),
    };
    let filter = DeliveryFilter { generation: None, user: Some(caller.user.id), status, limit };
    reports(&state, &filter).await
}

/// The deliveries `filter` selects (it names the caller), with their attempt logs.
async fn reports(state: &ApiContext, filter: &DeliveryFilter) -> ApiResult<Json<wire::DeliveryList>> {
    let mut deliveries = Vec::new();
    for delivery in state.store.list_deliveries(filter).await? {
        if let Some(report) = delivery_report(&*state.store, delivery.id, filter.user).await? {
            deliveries.push(report);
        }
    }
    Ok(Json(wire::DeliveryList { deliveries }))
}

async fn get_delivery(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<wire::DeliveryResponse>> {
    let id: DeliveryId = parse_id("id", &id)?;
    let delivery = delivery_report(&*state.store, id, Some(caller.user.id)).await?;
    Ok(Json(wire::DeliveryResponse { delivery }))
}

/// Sends the delivery again from the start of the retry schedule, with the same `webhook-id`. A
/// delivery already due or in flight is not sent twice: the answer shows it as it is.
async fn retry_delivery(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<wire::DeliveryResponse>> {
    let id: DeliveryId = parse_id("id", &id)?;
    match state.store.retry_delivery(id, Some(caller.user.id), now_ms()).await? {
        Redelivery::Missing => return Ok(Json(wire::DeliveryResponse { delivery: None })),
        Redelivery::AlreadyQueued => {}
        Redelivery::TooSoon => return Err(ApiError::TooSoon { retry_after_seconds: 1 }),
        Redelivery::Queued => state.wake_delivery_engine(),
    }
    let delivery = delivery_report(&*state.store, id, Some(caller.user.id)).await?;
    Ok(Json(wire::DeliveryResponse { delivery }))
}
