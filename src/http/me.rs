//! `/me`: the caller's user details.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::ApiContext;
use super::error::ApiResult;
use super::extract::Caller;
use crate::wire;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/me", get(get_user_self))
}

/// Easel does not meter tokens; `apiConcurrencySlots` is real (see [`wire::UserDetailsResponse`]).
async fn get_user_self(State(_state): State<ApiContext>, caller: Caller) -> ApiResult<Json<wire::UserDetailsResponse>> {
    Ok(Json(wire::UserDetailsResponse::new(&caller.user)))
}
