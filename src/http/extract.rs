//! Extractors that answer bad input in Easel's error shape instead of axum's plain-text defaults:
//! the authenticated caller, JSON bodies, ids in paths.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde_json::Value;

use super::ApiContext;
use super::error::ApiError;
use crate::clock::now_ms;
use crate::generation::FieldError;
use crate::secrets::hash_api_key;
use crate::store::{ApiKey, User};

/// How stale `last_used_at` may get before a request refreshes it (one write a minute per key at
/// most, not one per request).
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// The caller, authenticated by `Authorization: Bearer <api key>`.
pub struct Caller {
    pub user: User,
    pub key: ApiKey,
}

impl FromRequestParts<ApiContext> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiContext) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let (scheme, key) = header.trim().split_once(' ').unwrap_or(("", ""));
        let key = key.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() || key.len() > 256 {
            return Err(ApiError::Unauthorized);
        }
        let (user, key) = state.store.authenticate(&hash_api_key(key)).await?.ok_or(ApiError::Unauthorized)?;
        let now = now_ms();
        if key.last_used_at.is_none_or(|last| now - last > TOUCH_INTERVAL_MS) {
            let store = state.store.clone();
            let id = key.id;
            tokio::spawn(async move {
                if let Err(e) = store.touch_api_key(id, now).await {
                    tracing::warn!(error.message = %e, "cannot record API key use");
                }
            });
        }
        Ok(Caller { user, key })
    }
}

/// A JSON request body; `None` when the body is empty (the Python SDK sends no body at all for
/// some optional bodies). The content type is not checked: the body must simply be JSON.
pub struct JsonBody(pub Option<Value>);

impl FromRequest<ApiContext> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiContext) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(state.api.max_body_bytes)
            } else {
                ApiError::Malformed(format!("cannot read the request body: {rejection}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(None));
        }
        serde_json::from_slice(&bytes)
            .map(|value| JsonBody(Some(value)))
            .map_err(|e| ApiError::Malformed(format!("the request body is not valid JSON: {e}")))
    }
}

/// One parameter of the route's path (an id, a file's key), percent-decoded. A path that does not
/// decode (bad percent-encoding, or bytes that are not UTF-8) is answered in the error shape.
pub struct PathText(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(text)) => Ok(PathText(text)),
            Err(rejection) => Err(ApiError::Invalid(FieldError::new(
                "path",
                format!("the URL path does not decode to UTF-8 text ({})", rejection.body_text()),
            ))),
        }
    }
}

/// Parses a path segment that must be a UUID, naming the parameter when it is not.
pub fn parse_id<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, ApiError> {
    text.parse()
        .map_err(|_| ApiError::Invalid(FieldError::new(name, format!("`{name}` must be a UUID (got {text:?})"))))
}

/// An integer query parameter between `min` and `max` (`default` when absent), naming the
/// parameter when it is not.
pub fn query_number(
    query: &std::collections::HashMap<String, String>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, FieldError> {
    match query.get(name) {
        None => Ok(default),
        Some(text) => text.parse::<u64>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
            FieldError::new(name, format!("`{name}` must be an integer between {min} and {max} (got {text:?})"))
        }),
    }
}
