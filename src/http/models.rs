//! `/platformModels`: the model catalogue.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::ApiContext;
use super::error::ApiResult;
use super::extract::Caller;
use crate::wire;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/platformModels", get(list_platform_models))
}

async fn list_platform_models(
    State(state): State<ApiContext>,
    _caller: Caller,
) -> ApiResult<Json<wire::PlatformModels>> {
    let custom_models = state.catalogue.list().into_iter().map(wire::PlatformModel::new).collect();
    Ok(Json(wire::PlatformModels { custom_models }))
}
