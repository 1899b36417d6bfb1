//! The HTTP layer's one error type. Every error leaves Easel as Leonardo's (Hasura's) shape,
//! `{"error": "...", "path": "$", "code": "..."}`, with a fitting status. Internal errors keep
//! their cause; they are logged once, with the whole chain, where the 500 is made, and the client
//! gets a generic 500.

use std::error::Error as _;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::generation::FieldError;
use crate::store::StoreError;
use crate::wire;

/// What the client reads in place of an internal error's cause.
const INTERNAL_MESSAGE: &str = "Internal Server Error";

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
    /// The key is valid but may not do this (the message says which permission it lacks).
    #[error("{0}")]
    Forbidden(String),
    /// An object of Easel's own routes (an API key, an inspector bin) that the caller's user does
    /// not have; another user's object is answered the same.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the object's state (the message says how to proceed).
    #[error("{0}")]
    Conflict(String),
    /// Creating or rotating an API key failed for a reason that is not the client's (sealed
    /// secrets that do not open, settings that cannot work).
    #[error("cannot create the API key")]
    KeyCreation(#[source] crate::admin::AdminError),
    /// A Leonardo operation this server does not serve (the message names it).
    #[error("{0}")]
    NotSupported(String),
    /// An upload the policy does not allow (expired, used, altered, too large).
    #[error("upload refused: {0}")]
    UploadRefused(String),
    /// A server Easel relies on for the answer (the prompt tools' model) failed; the message
    /// says which and how.
    #[error("{0}")]
    Upstream(String),
    /// This node cannot do what its configuration asks (a key's secrets that do not open with its
    /// master key, say).
    #[error("misconfigured: {0}")]
    Misconfigured(crate::webhook::attempt::AttemptError),
    /// The database failed: an outage or a bug.
    #[error("store error while serving a request")]
    Store(#[from] StoreError),
    /// Image storage failed: an outage or a bug.
    #[error("image storage error while serving a request")]
    Storage(#[from] object_store::Error),
    /// A handler panicked, with the panic's message.
    #[error("a request handler panicked: {0}")]
    Panic(String),
    /// A per-user cap (inspector bins) is reached; the message names the setting.
    #[error("{0}")]
    LimitReached(String),
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
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "permission-denied"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::NotSupported(_) => (StatusCode::NOT_IMPLEMENTED, "not-supported"),
            ApiError::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream-failed"),
            ApiError::UploadRefused(_) => (StatusCode::FORBIDDEN, "upload-refused"),
            ApiError::LimitReached(_) => (StatusCode::CONFLICT, "limit-reached"),
            ApiError::Store(_)
            | ApiError::Storage(_)
            | ApiError::Panic(_)
            | ApiError::Misconfigured(_)
            | ApiError::KeyCreation(_) => (StatusCode::INTERNAL_SERVER_ERROR, "unexpected"),
        }
    }

    /// The error and every cause under it, outermost first: `a: b: c`. A cause whose message its
    /// parent already ends with (`"database error: {0}"`) is not repeated.
    fn cause_chain(&self) -> String {
        let mut chain = self.to_string();
        let mut source = self.source();
        while let Some(cause) = source {
            let message = cause.to_string();
            if !chain.ends_with(&message) {
                chain.push_str(": ");
                chain.push_str(&message);
            }
            source = cause.source();
        }
        chain
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(
                error.message = %self,
                error.cause_chain = %self.cause_chain(),
                error.detail = ?self,
                "answering 500 Internal Server Error"
            );
            INTERNAL_MESSAGE.to_string()
        } else {
            self.to_string()
        };
        let mut response = (status, Json(wire::ErrorBody::new(message, code))).into_response();
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

impl From<crate::admin::AdminError> for ApiError {
    fn from(error: crate::admin::AdminError) -> ApiError {
        match error {
            // The CLI's wording, with the field as the REST body names it.
            crate::admin::AdminError::Invalid(mut field) => {
                if !field.message.contains(&format!("`{}`", field.field)) {
                    field.message = format!("`{}`: {}", field.field, field.message);
                }
                ApiError::Invalid(field)
            }
            crate::admin::AdminError::Store(e) => ApiError::Store(e),
            other => ApiError::KeyCreation(other),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
pub(super) mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `f` logs, and what it returns.
    pub(in crate::http) fn logged<T>(f: impl FnOnce() -> T) -> (String, T) {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).without_time().finish();
        let result = tracing::subscriber::with_default(subscriber, f);
        let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        (log, result)
    }

    pub(in crate::http) async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn an_internal_error_keeps_its_cause_is_logged_once_with_it_and_answers_a_generic_500() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the database hung up");
        let error = ApiError::from(StoreError::Database(sqlx::Error::Io(io)));
        let cause = error.source().expect("the store error is kept");
        assert!(matches!(cause.downcast_ref::<StoreError>(), Some(StoreError::Database(_))));

        let (log, response) = logged(|| error.into_response());
        assert_eq!(log.lines().count(), 1, "logged once: {log}");
        assert!(log.contains("ERROR"), "{log}");
        assert!(
            log.contains(
                "store error while serving a request: database error: error communicating with database: the database hung up"
            ),
            "the whole chain, each cause once: {log}"
        );
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_text(response).await;
        assert_eq!(body, r#"{"error":"Internal Server Error","path":"$","code":"unexpected"}"#);
    }

    #[tokio::test]
    async fn an_image_storage_error_is_kept_too() {
        let error = ApiError::from(object_store::Error::Generic { store: "S3", source: "bucket gone".into() });
        assert!(error.source().and_then(|e| e.downcast_ref::<object_store::Error>()).is_some());
        let (log, response) = logged(|| error.into_response());
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("image storage error while serving a request") && log.contains("bucket gone"), "{log}");
        assert!(!body_text(response).await.contains("bucket"));
    }

    #[test]
    fn every_error_code_is_listed_in_the_document() {
        let io = || StoreError::Database(sqlx::Error::Io(std::io::Error::other("down")));
        let errors = [
            ApiError::Unauthorized,
            ApiError::Invalid(FieldError::new("f", "m")),
            ApiError::Malformed("m".into()),
            ApiError::PayloadTooLarge(1),
            ApiError::RouteNotFound,
            ApiError::MethodNotAllowed,
            ApiError::SlotsFull { slots: 1, retry_after_seconds: 1 },
            ApiError::TooSoon { retry_after_seconds: 1 },
            ApiError::NotSupported("m".into()),
            ApiError::UploadRefused("m".into()),
            ApiError::Upstream("m".into()),
            ApiError::Store(io()),
            ApiError::Panic("m".into()),
        ];
        for error in errors {
            let (_, code) = error.status_and_code();
            assert!(wire::ERROR_CODES.contains(&code), "{code} is missing from wire::ERROR_CODES");
        }
    }

    #[tokio::test]
    async fn client_errors_are_answered_with_their_message_and_not_logged() {
        let (log, response) = logged(|| ApiError::RouteNotFound.into_response());
        assert_eq!(log, "");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(body_text(response).await, r#"{"error":"resource does not exist","path":"$","code":"not-found"}"#);
    }
}
