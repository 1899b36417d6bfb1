//! `/platformModels`: the model catalogue.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::ApiContext;
use super::error::ApiResult;
use super::extract::Caller;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/platformModels", get(list_platform_models))
}

async fn list_platform_models(State(state): State<ApiContext>, _caller: Caller) -> ApiResult<Json<Value>> {
    let models: Vec<Value> = state
        .catalogue
        .list()
        .into_iter()
        .map(|model| {
            json!({
                "id": model.id,
                "name": model.name,
                "description": model.description,
                "nsfw": model.nsfw,
                "featured": model.featured,
                "generated_image": null,
            })
        })
        .collect();
    Ok(Json(json!({ "custom_models": models })))
}
