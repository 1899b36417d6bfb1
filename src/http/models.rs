//! `/platformModels`, `GET /models/{id}` and `/models/user/{userId}`: the model catalogue;
//! `/elements...`: the configured elements. Easel trains neither models nor elements, so a
//! user's own lists are empty and their lookups `null`.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiContext;
use super::error::ApiResult;
use super::extract::{Caller, PathText, parse_id};
use crate::generation::FieldError;
use crate::wire;

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(list_platform_models))
        .routes(routes!(get_model_by_id))
        .routes(routes!(list_user_models))
        .routes(routes!(list_elements))
        .routes(routes!(get_user_element))
        .routes(routes!(list_user_elements))
}

#[utoipa::path(
    get,
    path = "/platformModels",
    tag = "models",
    operation_id = "listPlatformModels",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The model catalogue", body = wire::PlatformModels)
    )
)]
async fn list_platform_models(
    State(state): State<ApiContext>,
    _caller: Caller,
) -> ApiResult<Json<wire::PlatformModels>> {
    let custom_models = state.catalogue.list().into_iter().map(wire::PlatformModel::new).collect();
    Ok(Json(wire::PlatformModels { custom_models }))
}

/// A model of the catalogue by id (`custom_models_by_pk`), or `null` for an id it does not hold.
/// Easel trains no models, so every model it knows is a platform model, public and COMPLETE.
#[utoipa::path(
    get,
    path = "/models/{id}",
    tag = "models",
    operation_id = "getModelById",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The model's id")),
    responses(
        (status = 200, description = "The model, or `null`", body = wire::ModelsByPk)
    )
)]
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
#[utoipa::path(
    get,
    path = "/models/user/{userId}",
    tag = "models",
    operation_id = "getCustomModelsByUserId",
    security(("bearer" = [])),
    params(("userId" = uuid::Uuid, Path, description = "A user id")),
    responses(
        (status = 200, description = "None: Easel trains no models", body = wire::CustomModelsOfUser)
    )
)]
async fn list_user_models(_caller: Caller, PathText(user): PathText) -> ApiResult<Json<wire::CustomModelsOfUser>> {
    parse_id::<uuid::Uuid>("userId", &user)?;
    Ok(Json(wire::CustomModelsOfUser { custom_models: Vec::new() }))
}

/// The configured elements (`[[elements]]`), as `{"loras": [...]}`.
#[utoipa::path(
    get,
    path = "/elements",
    tag = "elements",
    operation_id = "listElements",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The configured elements", body = wire::Elements)
    )
)]
async fn list_elements(State(state): State<ApiContext>, _caller: Caller) -> ApiResult<Json<wire::Elements>> {
    Ok(Json(wire::Elements { loras: state.catalogue.elements().map(wire::Element::new).collect() }))
}

/// A trained element of the caller by its (integer) id: always `null`, as Easel trains none.
#[utoipa::path(
    get,
    path = "/elements/{id}",
    tag = "elements",
    operation_id = "getUserElementById",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "A trained element's id (an integer)")),
    responses(
        (status = 200, description = "Always `null`: Easel trains no elements", body = wire::UserElementByPk)
    )
)]
async fn get_user_element(_caller: Caller, PathText(id): PathText) -> ApiResult<Json<wire::UserElementByPk>> {
    id.parse::<u64>()
        .map_err(|_| FieldError::new("id", format!("`id` must be an element id, an integer (got {id:?})")))?;
    Ok(Json(wire::UserElementByPk { user_loras_by_pk: () }))
}

/// The caller's trained elements: none.
#[utoipa::path(
    get,
    path = "/elements/user/{userId}",
    tag = "elements",
    operation_id = "listUserElements",
    security(("bearer" = [])),
    params(("userId" = uuid::Uuid, Path, description = "A user id")),
    responses(
        (status = 200, description = "None: Easel trains no elements", body = wire::UserElements)
    )
)]
async fn list_user_elements(_caller: Caller, PathText(user): PathText) -> ApiResult<Json<wire::UserElements>> {
    parse_id::<uuid::Uuid>("userId", &user)?;
    Ok(Json(wire::UserElements { user_loras: Vec::new() }))
}
