//! `/keys`: the caller's user's API keys (an Easel extension, for the console and scripts): list
//! (masked), create (with optional webhook details; the key and its signing secret are shown
//! once), rotate (a replacement with the same webhook details) and delete.
//!
//! Only a key with the `manageKeys` permission may use these routes: the operator's first key,
//! keys made with `easel keys create --manage-keys`, and keys a managing key creates with
//! `"manageKeys": true` (a rotation keeps the permission). Any other key is answered 403, so a key
//! handed to a server for generations cannot mint or delete keys. A key cannot delete itself:
//! rotate it, switch to the replacement, and delete it with that one.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, JsonBody, PathText, parse_id};
use crate::admin::{self, KeySpec};
use crate::clock::now_ms;
use crate::generation::{Body, FieldError};
use crate::ids::ApiKeyId;
use crate::store::ApiKey;
use crate::wire;

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(list_keys, create_key)).routes(routes!(delete_key)).routes(routes!(rotate_key))
}

/// The fields each body may have: anything else is refused by name (a typo must not be ignored).
const CREATE_FIELDS: &[&str] = &["name", "webhookCallbackUrl", "webhookCallbackApiKey", "manageKeys"];
const ROTATE_FIELDS: &[&str] = &["name", "newSigningSecret"];

/// The caller, if its key may manage keys.
fn manager(caller: Caller) -> ApiResult<Caller> {
    if caller.key.manage_keys {
        Ok(caller)
    } else {
        Err(ApiError::Forbidden(
            "this API key may not manage API keys: sign in with a key that has the manageKeys permission (the \
             first key, one made with `easel keys create --manage-keys`, or one such a key created with \
             manageKeys)"
                .into(),
        ))
    }
}

/// The caller's user's live key `id`; another user's key, or a deleted one, is missing.
async fn own_key(state: &ApiContext, caller: &Caller, id: &str) -> ApiResult<ApiKey> {
    let id: ApiKeyId = parse_id("id", id)?;
    let keys = state.store.list_api_keys(Some(caller.user.id)).await?;
    keys.into_iter().find(|key| key.id == id).ok_or_else(|| ApiError::NotFound(format!("you have no API key {id}")))
}

/// The body as an object with only `allowed` fields (an absent body reads as `{}`).
fn fields<'a>(body: &'a Option<serde_json::Value>, allowed: &[&str]) -> ApiResult<Option<Body<'a>>> {
    let Some(body) = body else { return Ok(None) };
    let body = Body::of(body)?;
    if let Some(unknown) = body.0.keys().find(|field| !allowed.contains(&field.as_str())) {
        return Err(FieldError::new(
            unknown,
            format!("unknown field `{unknown}`: the fields are {}", allowed.join(", ")),
        )
        .into());
    }
    Ok(Some(body))
}

/// A string field where an empty (or blank) string means "not given", as an HTML form sends it.
fn optional_text(body: &Option<Body<'_>>, field: &str) -> ApiResult<Option<String>> {
    let Some(body) = body else { return Ok(None) };
    Ok(body.string(field)?.map(|text| text.trim().to_string()).filter(|text| !text.is_empty()))
}

/// The caller's user's live keys, masked.
#[utoipa::path(
    get,
    path = "/keys",
    tag = "keys",
    operation_id = "listApiKeys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The keys, and which one is the caller's", body = wire::ApiKeyList),
        (status = 403, description = "The key may not manage keys (code `permission-denied`)", body = wire::ErrorBody)
    )
)]
async fn list_keys(State(state): State<ApiContext>, caller: Caller) -> ApiResult<Json<wire::ApiKeyList>> {
    let caller = manager(caller)?;
    let keys = state.store.list_api_keys(Some(caller.user.id)).await?;
    Ok(Json(wire::ApiKeyList { api_keys: keys.iter().map(wire::ApiKey::new).collect(), current_key_id: caller.key.id }))
}

/// Creates a key for the caller's user: `name` (required), `webhookCallbackUrl`,
/// `webhookCallbackApiKey` and `manageKeys` (false unless given).
#[utoipa::path(
    post,
    path = "/keys",
    tag = "keys",
    operation_id = "createApiKey",
    security(("bearer" = [])),
    request_body = crate::http::requests::CreateKeyRequest,
    responses(
        (status = 200, description = "The key and its signing secret, shown this once", body = wire::CreatedApiKey),
        (status = 403, description = "The key may not manage keys (code `permission-denied`)", body = wire::ErrorBody)
    )
)]
async fn create_key(
    State(state): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::CreatedApiKey>> {
    let caller = manager(caller)?;
    let body = fields(&body, CREATE_FIELDS)?;
    let name = optional_text(&body, "name")?.ok_or_else(|| {
        FieldError::new("name", "`name` is required: a name to tell the key apart (1 to 100 characters)")
    })?;
    let webhook_url = optional_text(&body, "webhookCallbackUrl")?;
    let webhook_api_key = optional_text(&body, "webhookCallbackApiKey")?;
    let manage_keys = match &body {
        Some(body) => body.boolean("manageKeys")?.unwrap_or(false),
        None => false,
    };
    let spec = KeySpec {
        user: caller.user.id,
        name: &name,
        webhook_url: webhook_url.as_deref(),
        webhook_api_key: webhook_api_key.as_deref(),
        manage_keys,
        own_bins: state.inspector.as_ref().map(|inspector| inspector.prefix()),
    };
    let created = admin::create_key(&*state.store, &state.master_key, &spec, &state.webhook).await?;
    tracing::info!(api_key.id = %created.record.id, user.id = %caller.user.id, by = %caller.key.id, "API key created");
    Ok(Json(wire::CreatedApiKey {
        record: wire::ApiKey::new(&created.record),
        key: created.key,
        signing_secret: created.signing_secret,
    }))
}

/// Makes the replacement of one of the caller's user's keys (see [`admin::rotate_api_key`]):
/// `name` (default: the old key's), `newSigningSecret` (default false: keep the old secret, so the
/// receiver needs no change). The old key stays live until it is deleted.
#[utoipa::path(
    post,
    path = "/keys/{id}/rotate",
    tag = "keys",
    operation_id = "rotateApiKey",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The key to replace")),
    request_body = crate::http::requests::RotateKeyRequest,
    responses(
        (status = 200, description = "The replacement key, shown this once", body = wire::RotatedApiKey),
        (status = 403, description = "The key may not manage keys (code `permission-denied`)", body = wire::ErrorBody),
        (status = 404, description = "The user has no such live key (code `not-found`)", body = wire::ErrorBody)
    )
)]
async fn rotate_key(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::RotatedApiKey>> {
    let caller = manager(caller)?;
    let body = fields(&body, ROTATE_FIELDS)?;
    let name = optional_text(&body, "name")?;
    let new_signing_secret = match &body {
        Some(body) => body.boolean("newSigningSecret")?.unwrap_or(false),
        None => false,
    };
    let old = own_key(&state, &caller, &id).await?;
    let rotated = admin::rotate_api_key(
        &*state.store,
        &state.master_key,
        &old,
        name.as_deref(),
        new_signing_secret,
        &state.webhook,
        state.inspector.as_ref().map(|inspector| inspector.prefix()),
    )
    .await?;
    tracing::info!(api_key.id = %rotated.record.id, replaces = %old.id, by = %caller.key.id, "API key rotated");
    Ok(Json(wire::RotatedApiKey {
        record: wire::ApiKey::new(&rotated.record),
        key: rotated.key,
        signing_secret_kept: rotated.signing_secret.is_none(),
        signing_secret: rotated.signing_secret,
        replaces: old.id,
    }))
}

/// Deletes one of the caller's user's keys other than the caller's own: it stops authenticating at
/// once on this node, and within `api.auth_cache_ttl` on the others; callbacks it owes are still
/// delivered.
#[utoipa::path(
    delete,
    path = "/keys/{id}",
    tag = "keys",
    operation_id = "deleteApiKey",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The key to delete")),
    responses(
        (status = 200, description = "Deleted", body = wire::DeletedApiKey),
        (status = 403, description = "The key may not manage keys (code `permission-denied`)", body = wire::ErrorBody),
        (status = 404, description = "The user has no such live key (code `not-found`)", body = wire::ErrorBody),
        (status = 409, description = "The key is the caller's own (code `conflict`)", body = wire::ErrorBody)
    )
)]
async fn delete_key(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<wire::DeletedApiKey>> {
    let caller = manager(caller)?;
    let key = own_key(&state, &caller, &id).await?;
    if key.id == caller.key.id {
        return Err(ApiError::Conflict(
            "you cannot delete the API key you are using: rotate it (POST /keys/{id}/rotate), switch to the new key, \
             and delete this one with it"
                .into(),
        ));
    }
    if !state.store.delete_api_key(key.id, now_ms()).await? {
        // Deleted by another request a moment ago.
        return Err(ApiError::NotFound(format!("you have no API key {}", key.id)));
    }
    tracing::info!(api_key.id = %key.id, by = %caller.key.id, "API key deleted");
    Ok(Json(wire::DeletedApiKey { id: key.id, deleted: true }))
}
