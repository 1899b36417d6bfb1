//! `/platformModels` and `GET /models/{id}`: the model catalogue.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::ApiContext;
use super::error::ApiResult;
use super::extract::{Caller, PathText, parse_id};
use crate::wire;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/platformModels", get(list_platform_models)).route("/models/{id}", get(get_model_by_id))
}

async fn list_platform_models(
    State(state): State<ApiContext>,
    _caller: Caller,
) -> ApiResult<Json<wire::PlatformModels>> {
    let custom_models = state.catalogue.list().into_iter().map(wire::PlatformModel::new).collect();
    Ok(Json(wire::PlatformModels { custom_models }))
}

/// A model of the catalogue by id (`custom_models_by_pk`), or `null` for an id it does not hold.
/// Easel trains no models, so every model it knows is a platform model, public and COMPLETE.
async fn get_model_by_id(
    State(state): State<ApiContext>,
    _caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<wire::ModelsByPk>> {
    let id: uuid::Uuid = parse_id("id", &id)?;
    Ok(Json(wire::ModelsByPk { custom_models_by_pk: state.catalogue.get(&id).map(wire::ModelById::new) }))
}
