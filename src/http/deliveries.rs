//! Easel's extension next to `/generations/{id}`: the caller's webhook deliveries (all of them, or
//! a generation's), each with its attempt log, and redelivery. Owners only; another user's
//! deliveries do not exist.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, PathText, parse_id, query_number};
use crate::clock::now_ms;
use crate::generation::FieldError;
use crate::ids::{DeliveryId, GenerationId};
use crate::store::{DeliveryFilter, DeliveryStatus, Redelivery};
use crate::webhook::report::delivery_report;
use crate::wire;

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(list_deliveries))
        .routes(routes!(list_generation_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(retry_delivery))
}

/// The webhook deliveries of a generation of the caller, each with its attempt log.
#[utoipa::path(
    get,
    path = "/generations/{id}/deliveries",
    tag = "deliveries",
    operation_id = "getGenerationDeliveries",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The generation's id")),
    responses((status = 200, description = "Its deliveries (none for another user's generation)",
               body = wire::DeliveryList))
)]
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
#[utoipa::path(
    get,
    path = "/deliveries",
    tag = "deliveries",
    operation_id = "listDeliveries",
    security(("bearer" = [])),
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "At most this many (default 20)"),
        ("status" = Option<String>, Query, pattern = "^(pending|succeeded|failed)$", description = "Only these"),
    ),
    responses((status = 200, description = "The deliveries", body = wire::DeliveryList))
)]
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

/// A delivery of the caller with its attempt log, or `null`.
#[utoipa::path(
    get,
    path = "/deliveries/{id}",
    tag = "deliveries",
    operation_id = "getDelivery",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The delivery's id (its `webhook-id`)")),
    responses((status = 200, description = "The delivery, or `null`", body = wire::DeliveryResponse))
)]
async fn get_delivery(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<wire::DeliveryResponse>> {
    let id: DeliveryId = parse_id("id", &id)?;
    let delivery = delivery_report(&*state.store, id, Some(caller.user.id)).await?;
    Ok(Json(wire::DeliveryResponse { delivery }))
}

#[utoipa::path(
    post,
    path = "/deliveries/{id}/retry",
    tag = "deliveries",
    operation_id = "retryDelivery",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The delivery's id")),
    responses(
        (status = 200, description = "The delivery as it is now, or `null` when the caller has none by that id",
         body = wire::DeliveryResponse),
        (status = 429, description = "Redelivered a moment ago (code `rate-limited`)", body = wire::ErrorBody,
         headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
/// Sends the delivery again from the start of the retry schedule, with the same `webhook-id`. A
/// delivery already due or in flight is not sent twice: the answer shows it as it is.
async fn retry_delivery(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<wire::DeliveryResponse>> {
    let id: DeliveryId = parse_id("id", &id)?;
    let queued = match state.store.retry_delivery(id, Some(caller.user.id), now_ms()).await? {
        Redelivery::Missing => return Ok(Json(wire::DeliveryResponse { delivery: None })),
        Redelivery::AlreadyQueued => false,
        Redelivery::TooSoon => return Err(ApiError::TooSoon { retry_after_seconds: 1 }),
        Redelivery::Queued => true,
    };
    // Read before waking this node's engine, so the answer usually shows the redelivery queued;
    // another node's engine (or this one's poll) may still have sent it already.
    let delivery = delivery_report(&*state.store, id, Some(caller.user.id)).await?;
    if queued {
        state.wake_delivery_engine();
    }
    Ok(Json(wire::DeliveryResponse { delivery }))
}
