//! Init images: `POST /init-image` and `POST /canvas-init-image` hand out presigned upload
//! policies ([`crate::uploads`]); `GET` and `DELETE /init-image/{id}`; and, with local storage
//! (or a bucket without static credentials), the upload target `POST /uploads/{id}` itself,
//! which needs no API key: the policy's signature is the authorization.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use serde_json::{Map, Value};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, JsonBody, PathText, parse_id};
use crate::clock::now_ms;
use crate::generation::{Body, FieldError};
use crate::store::{InitImage, InitImageKind};
use crate::uploads::{self, UploadRules, Uploads};
use crate::wire;

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(upload_init_image))
        .routes(routes!(get_init_image, delete_init_image))
        .routes(routes!(upload_canvas_init_image))
}

/// The upload target, outside `/api/rest/v1`, for uploads this server receives.
pub fn upload_router(max_upload_bytes: u64) -> OpenApiRouter<ApiContext> {
    // The multipart envelope (fields, boundaries) comes on top of the file itself.
    let limit = usize::try_from(max_upload_bytes).unwrap_or(usize::MAX).saturating_add(64 * 1024);
    OpenApiRouter::new().routes(routes!(receive_upload).layer(DefaultBodyLimit::max(limit)))
}

/// A declared extension, or the error naming `field`.
fn extension(body: &Body<'_>, field: &str) -> Result<String, FieldError> {
    let allowed: Vec<&str> = uploads::EXTENSIONS.iter().map(|(ext, _)| *ext).collect();
    let text = body
        .string(field)?
        .ok_or_else(|| FieldError::new(field, format!("`{field}` is required: one of {}", allowed.join(", "))))?;
    let lower = text.to_ascii_lowercase();
    if uploads::content_type(&lower).is_none() {
        return Err(FieldError::new(field, format!("`{field}` must be one of {} (got {text:?})", allowed.join(", "))));
    }
    Ok(lower)
}

/// Records a new init image's policy and presigns it.
async fn presign(
    state: &ApiContext,
    caller: &Caller,
    kind: InitImageKind,
    extension: String,
) -> ApiResult<(InitImage, uploads::Presigned)> {
    let now = now_ms();
    let id = uuid::Uuid::new_v4();
    let image = InitImage {
        id,
        user_id: caller.user.id,
        kind,
        storage_key: format!("users/{}/init-images/{id}.{extension}", caller.user.id),
        extension,
        created_at: now,
        expires_at: now + state.api.upload_expiry.as_millis() as i64,
        uploaded_at: None,
        size: None,
    };
    state.store.create_init_image(&image).await?;
    let rules = UploadRules {
        storage_key: &image.storage_key,
        content_type: uploads::content_type(&image.extension).expect("validated extension"),
        max_bytes: state.api.max_upload_bytes,
        expires_at: image.expires_at,
    };
    let presigned = state.uploads.presign(&id.to_string(), &rules, now);
    Ok((image, presigned))
}

/// A presigned upload policy for an init image: send the file to `url` with `fields`.
#[utoipa::path(
    post,
    path = "/init-image",
    tag = "init images",
    operation_id = "uploadInitImage",
    security(("bearer" = [])),
    request_body = crate::http::requests::InitImageRequest,
    responses((status = 200, description = "The init image's id and its upload policy", body = wire::UploadInitImageResponse,
               links(
                   ("getInitImage" = (operation_id = "getInitImageById",
                                      parameters(("id" = "$response.body#/uploadInitImage/id")))),
                   ("deleteInitImage" = (operation_id = "deleteInitImageById",
                                         parameters(("id" = "$response.body#/uploadInitImage/id")))),
               )))
)]
async fn upload_init_image(
    State(state): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::UploadInitImageResponse>> {
    let body = body.unwrap_or_else(|| Value::Object(Map::new()));
    let extension = extension(&Body::of(&body)?, "extension")?;
    let (image, presigned) = presign(&state, &caller, InitImageKind::Init, extension).await?;
    Ok(Json(wire::UploadInitImageResponse {
        upload_init_image: wire::InitImageUpload {
            id: image.id,
            fields: presigned.fields_json(),
            key: presigned.fields["key"].clone(),
            url: presigned.url,
        },
    }))
}

/// Presigned upload policies for a canvas request's init image and mask.
#[utoipa::path(
    post,
    path = "/canvas-init-image",
    tag = "init images",
    operation_id = "uploadCanvasInitAndMaskImage",
    security(("bearer" = [])),
    request_body = crate::http::requests::CanvasInitImageRequest,
    responses((status = 200, description = "The two ids and their upload policies", body = wire::UploadCanvasInitImageResponse))
)]
async fn upload_canvas_init_image(
    State(state): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::UploadCanvasInitImageResponse>> {
    let body = body.unwrap_or_else(|| Value::Object(Map::new()));
    let body = Body::of(&body)?;
    let (init_extension, mask_extension) = (extension(&body, "initExtension")?, extension(&body, "maskExtension")?);
    let (init, init_upload) = presign(&state, &caller, InitImageKind::CanvasInit, init_extension).await?;
    let (mask, mask_upload) = presign(&state, &caller, InitImageKind::CanvasMask, mask_extension).await?;
    Ok(Json(wire::UploadCanvasInitImageResponse {
        upload_canvas_init_image: wire::CanvasInitImageUpload {
            init_image_id: init.id,
            init_fields: init_upload.fields_json(),
            init_key: init_upload.fields["key"].clone(),
            init_url: init_upload.url,
            mask_image_id: mask.id,
            mask_fields: mask_upload.fields_json(),
            mask_key: mask_upload.fields["key"].clone(),
            mask_url: mask_upload.url,
        },
    }))
}

/// An init image of the caller, or `null`.
#[utoipa::path(
    get,
    path = "/init-image/{id}",
    tag = "init images",
    operation_id = "getInitImageById",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The init image's id")),
    responses((status = 200, description = "The init image, or `null`", body = wire::InitImageByPk))
)]
async fn get_init_image(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<wire::InitImageByPk>> {
    let id: uuid::Uuid = parse_id("id", &id)?;
    let image = state.store.get_init_image(caller.user.id, id).await?;
    Ok(Json(wire::InitImageByPk {
        init_images_by_pk: image.as_ref().map(|image| wire::InitImageSummary::new(image, &state.images)),
    }))
}

/// Deletes an init image of the caller and its file.
#[utoipa::path(
    delete,
    path = "/init-image/{id}",
    tag = "init images",
    operation_id = "deleteInitImageById",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The init image's id")),
    responses((status = 200, description = "The id deleted, or `null`", body = wire::DeleteInitImageByPk))
)]
async fn delete_init_image(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<wire::DeleteInitImageByPk>> {
    let id: uuid::Uuid = parse_id("id", &id)?;
    let Some(key) = state.store.delete_init_image(caller.user.id, id).await? else {
        return Ok(Json(wire::DeleteInitImageByPk { delete_init_images_by_pk: None }));
    };
    if let Err(e) = state.images.delete(&[key]).await {
        tracing::warn!(init_image.id = %id, error.message = %e, "cannot delete the file of a deleted init image");
    }
    Ok(Json(wire::DeleteInitImageByPk { delete_init_images_by_pk: Some(wire::IdOnly { id }) }))
}

/// The form of an upload: the policy's fields (any names) and the file.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // For its schema.
struct UploadForm {
    key: String,
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[utoipa::path(
    post,
    path = "/uploads/{id}",
    tag = "init images",
    operation_id = "receiveUpload",
    params(("id" = String, Path, description = "The init image's id, from the policy's URL")),
    request_body(content = UploadForm, content_type = "multipart/form-data",
                 description = "The policy's `fields`, then `file`"),
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "Not multipart, no `file`, or not a picture of the declared kind",
         body = wire::ErrorBody),
        (status = 403, description = "The policy does not allow it (code `upload-refused`)", body = wire::ErrorBody),
        (status = 404, description = "This server does not receive uploads (S3)", body = wire::ErrorBody),
    )
)]
/// Receives one file for one policy: every field of the policy and then the `file` part, as an S3
/// POST upload. Answers 204 like S3; refusals in the error shape, 403 when the policy does not
/// allow the upload (as S3 answers), 400 when the file is not the declared kind of picture.
async fn receive_upload(
    State(state): State<ApiContext>,
    PathText(id): PathText,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<StatusCode> {
    let Uploads::Local { key: upload_key, .. } = &state.uploads else {
        return Err(ApiError::RouteNotFound);
    };
    // Not multipart/form-data (or no boundary): answered in the error shape, not axum's text.
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::Malformed(format!("the upload must be multipart/form-data: {}", rejection.body_text()))
    })?;
    let refused = |why: String| ApiError::UploadRefused(why);
    let id: uuid::Uuid = id.parse().map_err(|_| refused(format!("there is no upload policy {id:?}")))?;
    let Some(image) = state.store.find_init_image(id).await? else {
        return Err(refused(format!("there is no upload policy {id} (it was deleted, or never made)")));
    };
    let mut form = BTreeMap::new();
    let mut file = None;
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        ApiError::Malformed(format!("the upload is not readable multipart/form-data: {}", e.body_text()))
    };
    while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            file = Some(field.bytes().await.map_err(unreadable)?);
            break; // as S3: fields after the file are ignored
        }
        form.insert(name, field.text().await.map_err(unreadable)?);
    }
    let file = file.ok_or_else(|| ApiError::Malformed("the upload has no `file` part".into()))?;
    let now = now_ms();
    uploads::verify_local(upload_key, &form, file.len() as u64, now).map_err(|e| refused(e.to_string()))?;
    if form.get("key") != Some(&image.storage_key) {
        return Err(refused(format!("this URL takes the upload of {}, not of the `key` sent", image.storage_key)));
    }
    let (width, height) = uploads::check_picture(&file, &image.extension).map_err(|why| {
        ApiError::Invalid(FieldError::new(
            "file",
            format!("the file is not a {} picture Easel can use: {why}", image.extension),
        ))
    })?;
    if !state.store.mark_init_image_uploaded(id, now, file.len() as i64).await? {
        return Err(refused("this upload policy was already used (one upload each) or has expired".into()));
    }
    state.images.put(&image.storage_key, file).await?;
    tracing::info!(init_image.id = %id, width, height, "init image uploaded");
    Ok(StatusCode::NO_CONTENT)
}
