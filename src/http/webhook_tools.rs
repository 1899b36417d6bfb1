//! Easel's tools for troubleshooting callbacks, on the caller's own API key: the doctor
//! (`POST /webhook/doctor`, the same run as `easel doctor`, with the key's webhook URL, webhook key
//! and signing secret) and test callbacks (`POST /webhook/test`: one signed callback of the real
//! shape, sent by the delivery engine, kept in the delivery log, never retried).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::Caller;
use crate::clock::now_ms;
use crate::generation::FieldError;
use crate::ids::DeliveryId;
use crate::store::{NewDelivery, TEST_EVENT_TYPE};
use crate::webhook::doctor::{self, Patient};
use crate::webhook::engine::{KeySecrets, LocalReceiver};
use crate::webhook::outbox::endpoint_of;
use crate::webhook::payload;
use crate::webhook::report::delivery_report;
use crate::wire;

/// How often a test callback's delivery is looked at while the caller waits for its attempt.
const POLL: Duration = Duration::from_millis(25);
/// Beyond `webhook.timeout`, how long the caller waits for the engine to claim and record it.
const RECORD_MARGIN: Duration = Duration::from_secs(5);

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(webhook_state))
        .routes(routes!(enable_webhook))
        .routes(routes!(run_doctor))
        .routes(routes!(send_test_callback))
}

/// The caller's key's webhook: its URL and state (`active`, `failing`, `disabled`, or `none`).
#[utoipa::path(
    get,
    path = "/webhook",
    tag = "webhook",
    operation_id = "getWebhook",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key's webhook and its state", body = wire::WebhookState)
    )
)]
async fn webhook_state(State(state): State<ApiContext>, caller: Caller) -> ApiResult<Json<wire::WebhookState>> {
    // Read afresh: the caller's record may come from the authentication cache, and the state
    // changes as attempts are recorded.
    let key = state.store.get_api_key(caller.key.id).await?.unwrap_or(caller.key);
    Ok(Json(wire::WebhookState::new(&key)))
}

/// Re-enables the caller's key's webhook: held deliveries are sent, oldest first.
#[utoipa::path(
    post,
    path = "/webhook/enable",
    tag = "webhook",
    operation_id = "enableWebhook",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key's webhook, enabled", body = wire::WebhookState)
    )
)]
async fn enable_webhook(State(state): State<ApiContext>, caller: Caller) -> ApiResult<Json<wire::WebhookState>> {
    state.store.enable_webhook(caller.key.id, Some(caller.user.id), now_ms()).await?;
    state.wake_delivery_engine();
    let key = state.store.get_api_key(caller.key.id).await?.unwrap_or(caller.key);
    Ok(Json(wire::WebhookState::new(&key)))
}

/// The caller's key's webhook URL, secrets and a test callback's body (with its generation id).
struct Webhook {
    url: String,
    secrets: KeySecrets,
    generation_id: crate::ids::GenerationId,
    body: bytes::Bytes,
}

fn webhook_of(state: &ApiContext, caller: &Caller) -> ApiResult<Webhook> {
    let url = caller.key.webhook_url.clone().ok_or_else(|| {
        ApiError::Invalid(FieldError::new(
            "webhookCallbackUrl",
            "this API key has no webhook callback URL: there is nothing to examine or call back. Create a key with \
             one (easel keys create --webhook-url https://...) and use that key",
        ))
    })?;
    let secrets = KeySecrets::open(&state.master_key, &caller.key).map_err(ApiError::Misconfigured)?;
    let (generation_id, body) = payload::test_event(
        &caller.key,
        secrets.webhook_api_key_masked.as_deref(),
        &state.catalogue,
        &state.images,
        now_ms(),
    )?;
    Ok(Webhook { url, secrets, generation_id, body })
}

/// Examines the caller's key's webhook, step by step (see [`doctor`]).
#[utoipa::path(
    post,
    path = "/webhook/doctor",
    tag = "webhook",
    operation_id = "runWebhookDoctor",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every step of the examination", body = wire::DoctorReport),
        (status = 400, description = "The key has no webhook URL (code `validation-failed`)", body = wire::ErrorBody)
    )
)]
async fn run_doctor(State(state): State<ApiContext>, caller: Caller) -> ApiResult<Json<wire::DoctorReport>> {
    let webhook = webhook_of(&state, &caller)?;
    if state.inspector.as_ref().is_some_and(|inspector| inspector.owns(&webhook.url)) {
        return Ok(Json(doctor::in_process(&webhook.url)));
    }
    let patient = Patient { url: webhook.url, secrets: webhook.secrets, body: webhook.body, own_signing_secret: true };
    Ok(Json(doctor::run(&state.webhook, &patient).await))
}

/// Sends a test callback to the caller's key's webhook through the delivery engine and answers
/// with its attempt once it is recorded (within `webhook.timeout` and a few seconds).
#[utoipa::path(
    post,
    path = "/webhook/test",
    tag = "webhook",
    operation_id = "sendTestCallback",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The test callback's delivery and attempt", body = wire::TestCallback),
        (status = 400, description = "The key has no webhook URL (code `validation-failed`)", body = wire::ErrorBody)
    )
)]
async fn send_test_callback(State(state): State<ApiContext>, caller: Caller) -> ApiResult<Json<wire::TestCallback>> {
    let webhook = webhook_of(&state, &caller)?;
    let delivery = NewDelivery {
        id: DeliveryId::random(),
        generation_id: webhook.generation_id,
        user_id: caller.user.id,
        api_key_id: caller.key.id,
        event_type: TEST_EVENT_TYPE.to_string(),
        endpoint: endpoint_of(&webhook.url),
        url: webhook.url,
        payload: webhook.body,
        created_at: now_ms(),
        lease: None,
    };
    state.store.enqueue_delivery(&delivery).await?;
    state.wake_delivery_engine();
    let deadline = tokio::time::Instant::now() + state.webhook.timeout + RECORD_MARGIN;
    loop {
        let Some(report) = delivery_report(&*state.store, delivery.id, Some(caller.user.id)).await? else {
            // Only its user's key could have removed it meanwhile (by deleting the key).
            return Err(ApiError::Unauthorized);
        };
        if report.status != "pending" || tokio::time::Instant::now() >= deadline {
            let attempt = report.attempts.as_ref().and_then(|attempts| attempts.last().cloned());
            return Ok(Json(wire::TestCallback { delivered: report.status == "succeeded", attempt, delivery: report }));
        }
        tokio::time::sleep(POLL).await;
    }
}
