//! `/me`: the caller's user details.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiContext;
use super::error::ApiResult;
use super::extract::Caller;
use crate::wire;

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(get_user_self))
}

#[utoipa::path(
    get,
    path = "/me",
    tag = "user",
    operation_id = "getUserSelf",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller's user details", body = wire::UserDetailsResponse))
)]
/// Easel does not meter tokens; `apiConcurrencySlots` is real (see [`wire::UserDetailsResponse`]).
async fn get_user_self(State(_state): State<ApiContext>, caller: Caller) -> ApiResult<Json<wire::UserDetailsResponse>> {
    Ok(Json(wire::UserDetailsResponse::new(&caller.user)))
}
