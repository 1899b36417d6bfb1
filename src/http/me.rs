//! `/me`: the caller's user details.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::ApiContext;
use super::error::ApiResult;
use super::extract::Caller;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/me", get(get_user_self))
}

/// Easel does not meter tokens: balances are 0 and renewal dates `null`. `apiConcurrencySlots` is
/// real: the number of jobs the user may have pending at once.
async fn get_user_self(State(_state): State<ApiContext>, caller: Caller) -> ApiResult<Json<Value>> {
    Ok(Json(json!({"user_details": [{
        "user": {"id": caller.user.id, "username": caller.user.username},
        "tokenRenewalDate": null,
        "paidTokens": 0,
        "subscriptionTokens": 0,
        "subscriptionGptTokens": 0,
        "subscriptionModelTokens": 0,
        "apiConcurrencySlots": caller.user.api_concurrency_slots,
        "apiPaidTokens": 0,
        "apiSubscriptionTokens": 0,
        "apiPlanTokenRenewalDate": null,
    }]})))
}
