//! `/platformModels`, `GET /models/{id}` and `/models/user/{userId}`: the model catalogue;
//! `/elements...`: the configured elements. Easel trains neither models nor elements, so a
//! user's own lists are empty and their lookups `null`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::ApiContext;
use super::error::ApiResult;
use super::extract::{Caller, PathText, parse_id};
use crate::generation::FieldError;
use crate::wire;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/platformModels", get(list_platform_models))
        .route("/models/{id}", get(get_model_by_id))
        .route("/models/user/{userId}", get(list_user_models))
        .route("/elements", get(list_elements))
        .route("/elements/{id}", get(get_user_element))
        .route("/elements/user/{userId}", get(list_user_elements))
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

/// The caller's trained models: none (Easel trains no models; every model is a platform model).
/// Any other user's id reads the same: nothing.
async fn list_user_models(_caller: Caller, PathText(user): PathText) -> ApiResult<Json<wire::CustomModelsOfUser>> {
    parse_id::<uuid::Uuid>("userId", &user)?;
    Ok(Json(wire::CustomModelsOfUser { custom_models: Vec::new() }))
}

/// The configured elements (`[[elements]]`), as `{"loras": [...]}`.
async fn list_elements(State(state): State<ApiContext>, _caller: Caller) -> ApiResult<Json<wire::Elements>> {
    Ok(Json(wire::Elements { loras: state.catalogue.elements().map(wire::Element::new).collect() }))
}

/// A trained element of the caller by its (integer) id: always `null`, as Easel trains none.
async fn get_user_element(_caller: Caller, PathText(id): PathText) -> ApiResult<Json<wire::UserElementByPk>> {
    id.parse::<u64>()
        .map_err(|_| FieldError::new("id", format!("`id` must be an element id, an integer (got {id:?})")))?;
    Ok(Json(wire::UserElementByPk { user_loras_by_pk: () }))
}

/// The caller's trained elements: none.
async fn list_user_elements(_caller: Caller, PathText(user): PathText) -> ApiResult<Json<wire::UserElements>> {
    parse_id::<uuid::Uuid>("userId", &user)?;
    Ok(Json(wire::UserElements { user_loras: Vec::new() }))
}
