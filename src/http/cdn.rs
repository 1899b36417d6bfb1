//! `/cdn/{key}`: the image files, public like Leonardo's CDN (their paths hold unguessable ids).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::PathText;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/cdn/{*key}", get(get_image_file))
}

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
