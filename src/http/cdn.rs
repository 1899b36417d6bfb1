//! `/cdn/{key}`: the image files, public like Leonardo's CDN (their paths hold unguessable ids).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::PathText;
use crate::wire;

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(get_image_file))
}

/// An image file (generated images' and variations' `url`s; init images').
#[utoipa::path(
    get,
    path = "/cdn/{*key}",
    tag = "images",
    operation_id = "getImageFile",
    params(("key" = String, Path, description = "The file's key, slashes included")),
    responses(
        (status = 200, description = "The file", content(
            (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/webp"))),
        (status = 400, description = "The path does not decode to UTF-8", body = wire::ErrorBody),
        (status = 404, description = "No such file (code `not-found`)", body = wire::ErrorBody),
    )
)]
async fn get_image_file(State(state): State<ApiContext>, PathText(key): PathText) -> ApiResult<Response> {
    let content_type = match key.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()) {
        Some(ext) if ext == "jpg" || ext == "jpeg" => "image/jpeg",
        Some(ext) if ext == "png" => "image/png",
        Some(ext) if ext == "webp" => "image/webp",
        _ => return Err(ApiError::RouteNotFound),
    };
    let Some(bytes) = state.images.get(&key).await? else {
        return Err(ApiError::RouteNotFound);
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // A key names one immutable file: ids are never reused.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    Ok(response)
}
