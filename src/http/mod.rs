//! The HTTP API: Leonardo's REST v1 under `/api/rest/v1`, images under `/cdn/`, the web console
//! under `/console`, `/healthz`.
//! Only this module knows HTTP; handlers extract, validate, call the store and answer with the
//! shapes of [`crate::wire`]. Each resource file exposes `router()`; they are merged here.

mod cdn;
mod console;
mod deliveries;
mod error;
mod extract;
mod generations;
mod init_images;
mod inspector;
mod keys;
mod me;
mod metrics;
mod models;
pub mod openapi;
mod pricing;
mod prompts;
mod requests;
mod unsupported;
mod variations;
mod webhook_tools;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use tokio::sync::Notify;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use unsupported::UNSUPPORTED;

use crate::config::ApiConfig;
use crate::images::ImageStore;
use crate::models::Catalogue;
use crate::store::Store;
use crate::wire;

/// What handlers share.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub catalogue: Arc<Catalogue>,
    pub images: ImageStore,
    pub api: ApiConfig,
    /// Wakes this node's render workers when a job is created (`None` on API-only nodes).
    pub render_wakeup: Option<Arc<Notify>>,
    /// This node's render slots, for generations handed straight to its workers (`None` on
    /// API-only nodes).
    pub render_handoff: Option<Arc<crate::render::handoff::Handoff>>,
    /// Wakes this node's delivery engine when a delivery is retried (`None` where it does not run).
    pub delivery_wakeup: Option<Arc<Notify>>,
    /// Whether the worker roles this node runs are still running (`None`: not run here).
    pub running: Running,
    /// This node's name (lease owner), for its storage probe.
    pub node_id: String,
    /// The addresses callbacks leave from (`webhook.egress_ips`), published at `/egress-ips`.
    pub egress_ips: Vec<std::net::IpAddr>,
    /// The inference backends, shown by `/healthz`.
    pub backends: Vec<crate::config::BackendConfig>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where init image uploads go.
    pub uploads: crate::uploads::Uploads,
    /// `POST /prompt/random` and `/prompt/improve`.
    pub prompts: Arc<crate::prompts::PromptTools>,
    pub metrics_config: crate::config::MetricsConfig,
    /// This node's delivery engine, for the deliveries it holds (`None` where it does not run).
    pub delivery_queue: Option<crate::webhook::engine::DeliveryQueue>,
    /// Opens API keys' webhook secrets, for the doctor and test callbacks.
    pub master_key: crate::secrets::MasterKey,
    /// The delivery settings the doctor examines a webhook with.
    pub webhook: crate::config::WebhookConfig,
    /// The request inspector (`None` when `inspector.enabled` is off).
    pub inspector: Option<Arc<crate::inspector::Inspector>>,
}

/// The address a request came from (the TCP peer), set on each request by the server.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

pub type ApiContext = Arc<AppState>;

/// The routes; `api` is false on nodes that do not run the API role (they answer `/healthz` and
/// `/egress-ips` only). `GET /openapi.json` documents exactly the routes this node serves.
pub fn router(state: ApiContext, api: bool) -> Router {
    let (router, document) = routes(&state, api).split_for_parts();
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(openapi::Document::new(document)))
        .layer(DefaultBodyLimit::max(state.api.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), metrics::track))
        .layer(CatchPanicLayer::custom(answer_panic))
        .with_state(state)
}

/// Every route with its entry in the OpenAPI document: a route is added by annotating its handler
/// with `#[utoipa::path]` and registering it with `routes!` (never with a bare `.route`).
fn routes(state: &ApiContext, api: bool) -> OpenApiRouter<ApiContext> {
    let mut router = OpenApiRouter::with_openapi(openapi::base());
    if api {
        let rest = OpenApiRouter::new()
            .merge(generations::router())
            .merge(deliveries::router())
            .merge(variations::router())
            .merge(me::router())
            .merge(models::router())
            .merge(pricing::router())
            .merge(prompts::router())
            .merge(init_images::router())
            .merge(webhook_tools::router())
            .merge(inspector::router())
            .merge(keys::router())
            .merge(unsupported::router());
        router = router.nest("/api/rest/v1", rest).merge(cdn::router()).merge(console::router());
        if state.inspector.is_some() {
            router = router.merge(inspector::capture_router());
        }
        if state.uploads.is_local() {
            router = router.merge(init_images::upload_router(state.api.max_upload_bytes));
        }
    }
    if state.metrics_config.enabled {
        router = router.routes(routes!(metrics::scrape));
    }
    router
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(egress_ips))
        .routes(routes!(openapi::serve_document))
}

/// Liveness.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    operation_id = "getHealth",
    responses(
        (status = 200, description = "Alive (with the inference backends' state)", body = wire::Health),
        (status = 503, description = "The database is unreachable or image storage refuses writes", body = wire::Health),
    )
)]
async fn health(State(state): State<ApiContext>) -> Response {
    match state.store.ping().await {
        Ok(()) => match state.images.failure() {
            None => {
                let mut health = wire::Health::ok();
                if !state.backends.is_empty() {
                    let now = crate::clock::now_ms();
                    match state.store.backend_overview(now).await {
                        Ok(overview) => {
                            health.backends =
                                wire::BackendStatus::all(&state.backends, &state.catalogue, &overview, now)
                        }
                        Err(e) => tracing::warn!(error.message = %e, "health check: cannot read the backends' state"),
                    }
                }
                Json(health).into_response()
            }
            // Jobs cannot finish while their files cannot be written.
            Some(failure) => {
                (StatusCode::SERVICE_UNAVAILABLE, Json(wire::Health::storage_failing(&failure))).into_response()
            }
        },
        Err(e) => {
            tracing::error!(error.message = %e, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(wire::Health::database_unreachable())).into_response()
        }
    }
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    operation_id = "getReadiness",
    responses(
        (status = 200, description = "Ready: every check is `ok`", body = wire::Readiness),
        (status = 503, description = "Not ready: the failing checks say why", body = wire::Readiness),
    )
)]
/// Readiness, for load balancers and orchestrators: the database answers, image storage takes a
/// write (a small probe file, written and removed on each call), and the render workers and the
/// delivery engine this node runs are running. 503 names what fails. `/healthz` is liveness.
async fn ready(State(state): State<ApiContext>) -> Response {
    let mut checks = wire::ReadinessChecks::default();
    let mut ready = true;
    let mut check = |outcome: Result<(), String>| match outcome {
        Ok(()) => "ok".to_string(),
        Err(why) => {
            ready = false;
            why
        }
    };
    checks.database = check(state.store.ping().await.map_err(|e| format!("unreachable: {e}")));
    checks.storage = check(state.images.probe(&state.node_id).await.map_err(|e| format!("not writable: {e}")));
    let role = |flag: &Arc<std::sync::atomic::AtomicBool>| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) { Ok(()) } else { Err("stopped".to_string()) }
    };
    checks.render = state.running.render.as_ref().map(|flag| check(role(flag)));
    checks.deliver = state.running.deliver.as_ref().map(|flag| check(role(flag)));
    let (status, code) = if ready { ("ready", StatusCode::OK) } else { ("not ready", StatusCode::SERVICE_UNAVAILABLE) };
    if !ready {
        tracing::warn!(?checks, "not ready");
    }
    (code, Json(wire::Readiness { status, checks })).into_response()
}

/// The worker roles of this node: each flag is true while the role's task runs (it holds a
/// [`RunningGuard`], which clears the flag when the task ends, by panic too).
#[derive(Clone, Default)]
pub struct Running {
    pub render: Option<Arc<std::sync::atomic::AtomicBool>>,
    pub deliver: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Held by a role's task; clears its flag when dropped.
pub struct RunningGuard(pub Arc<std::sync::atomic::AtomicBool>);

impl RunningGuard {
    pub fn new() -> (RunningGuard, Arc<std::sync::atomic::AtomicBool>) {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(true));
        (RunningGuard(flag.clone()), flag)
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[utoipa::path(
    get,
    path = "/egress-ips",
    tag = "meta",
    operation_id = "getEgressIps",
    responses((status = 200, description = "The addresses callbacks leave from", body = wire::EgressIps))
)]
/// Where callbacks come from, for receivers' firewall allowlists. Public, like the list in
/// Leonardo's guide. An empty list means callbacks leave from whatever address the machine picks.
async fn egress_ips(State(state): State<ApiContext>) -> Json<wire::EgressIps> {
    Json(wire::EgressIps { egress_ips: state.egress_ips.clone() })
}

/// A handler that panicked gets the generic 500; the panic's message is logged with it.
fn answer_panic(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(message), _) => message.to_string(),
        (None, Some(message)) => message.clone(),
        (None, None) => "(no message)".into(),
    };
    ApiError::Panic(message).into_response()
}

async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

impl AppState {
    fn wake_render_workers(&self) {
        if let Some(wakeup) = &self.render_wakeup {
            wakeup.notify_one();
        }
    }

    fn wake_delivery_engine(&self) {
        if let Some(wakeup) = &self.delivery_wakeup {
            wakeup.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use error::tests::{body_text, logged};

    #[tokio::test]
    async fn a_panic_is_answered_with_a_generic_500_and_logged_once_with_its_message() {
        let (log, response) = logged(|| answer_panic(Box::new(format!("index {} out of range", 7))));
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("a request handler panicked: index 7 out of range"), "{log}");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body_text(response).await.contains("\"Internal Server Error\""));
    }
}
