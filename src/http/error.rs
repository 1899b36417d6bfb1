//! The HTTP layer's one error type. Every error leaves Easel as Leonardo's (Hasura's) shape,
//! `{"error": "...", "path": "$", "code": "..."}`, with a fitting status; internal errors are
//! logged in full and answered with a generic 500.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::generation::FieldError;
use crate::store::StoreError;
use crate::wire;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, malformed, unknown and deleted keys are all answered the same way.
    #[error("missing or invalid API key: send `Authorization: Bearer <api key>`")]
    Unauthorized,
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("{0}")]
    Malformed(String),
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("resource does not exist")]
    RouteNotFound,
    #[error("method not allowed for this resource")]
    MethodNotAllowed,
    #[error(
        "all {slots} of your concurrency slots are taken by pending jobs; retry after one finishes (apiConcurrencySlots in GET /me)"
    )]
    SlotsFull { slots: u32, retry_after_seconds: u32 },
    #[error("this delivery was redelivered a moment ago; ask again in {retry_after_seconds} s")]
    TooSoon { retry_after_seconds: u32 },
    #[error("Internal Server Error")]
    Internal,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "access-denied"),
            ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "validation-failed"),
            ApiError::Malformed(_) => (StatusCode::BAD_REQUEST, "parse-failed"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large"),
            ApiError::RouteNotFound => (StatusCode::NOT_FOUND, "not-found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"),
            ApiError::SlotsFull { .. } => (StatusCode::TOO_MANY_REQUESTS, "concurrency-limit"),
            ApiError::TooSoon { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "unexpected"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = (status, Json(wire::ErrorBody::new(self.to_string(), code))).into_response();
        match self {
            ApiError::Unauthorized => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::SlotsFull { retry_after_seconds, .. } | ApiError::TooSoon { retry_after_seconds } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(error.message = %error, error.cause_chain = ?error, "store error while serving a request");
        ApiError::Internal
    }
}

impl From<object_store::Error> for ApiError {
    fn from(error: object_store::Error) -> Self {
        tracing::error!(error.message = %error, error.cause_chain = ?error, "image storage error while serving a request");
        ApiError::Internal
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
