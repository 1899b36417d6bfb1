//! Easel's extension next to `/generations/{id}`: the webhook deliveries of a generation, each
//! with its attempt log, and redelivery. Owners only; another user's deliveries do not exist.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, PathText, parse_id};
use crate::clock::now_ms;
use crate::ids::{DeliveryId, GenerationId};
use crate::store::{DeliveryFilter, Redelivery};
use crate::webhook::report::delivery_report;
use crate::wire;

pub fn router() -> Router<ApiContext> {
    Router::new()
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
    let mut deliveries = Vec::new();
    for delivery in state.store.list_deliveries(&filter).await? {
        if let Some(report) = delivery_report(&*state.store, delivery.id, Some(caller.user.id)).await? {
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
