//! `GET /metrics` and the middleware that counts every request by route, method and status.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiContext;
use super::error::ApiError;
use crate::clock::now_ms;
use crate::metrics::{BackendLabels, Metrics, RequestLabels, RouteLabels, StateLabels};

/// Counts and times a request under its route pattern (never the raw path: ids would make the
/// labels unbounded).
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => path.as_str().to_string(),
        None => "unmatched".to_string(),
    };
    let method = match *request.method() {
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::HEAD | Method::OPTIONS => {
            request.method().as_str().to_string()
        }
        _ => "other".to_string(),
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics.http_requests.get_or_create(&RequestLabels { route: route.clone(), method: method.clone(), status }).inc();
    metrics.http_duration.get_or_create(&RouteLabels { route, method }).observe(started.elapsed().as_secs_f64());
    response
}

/// The metrics in OpenMetrics text; gauges of queues, backends and the database pool are read now.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    operation_id = "getMetrics",
    responses(
        (status = 200, description = "The metrics", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "`metrics.token` is set and `Authorization: Bearer <token>` does not match",
         body = crate::wire::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
    )
)]
pub async fn scrape(State(state): State<ApiContext>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = &state.metrics_config.token {
        let expected = format!("Bearer {}", token.expose());
        let given = headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok()).unwrap_or("");
        // Digests are compared, so the time taken says nothing about how much of the token matched.
        use sha2::{Digest, Sha256};
        if Sha256::digest(given.as_bytes()) != Sha256::digest(expected.as_bytes()) {
            return Err(ApiError::Unauthorized);
        }
    }
    let metrics = &state.metrics;
    let now = now_ms();
    let stats = state.store.queue_stats(now).await?;
    metrics.render_queue.set(stats.render_queue as i64);
    metrics.deliveries_pending.set(stats.deliveries_pending as i64);
    metrics.webhooks_disabled.set(stats.disabled_webhooks as i64);
    metrics.oldest_due_age.set(stats.oldest_due_at.map(|due| (now - due).max(0) as f64 / 1000.0).unwrap_or(0.0));
    if let Some(held) = state.delivery_queue.as_ref().and_then(|queue| queue.held()) {
        metrics.deliveries_held.set(held as i64);
    }
    if !state.backends.is_empty() {
        let overview = state.store.backend_overview(now).await?;
        for status in crate::wire::BackendStatus::all(&state.backends, &state.catalogue, &overview, now) {
            let labels = BackendLabels { backend: status.name.clone() };
            metrics.backends_healthy.get_or_create(&labels).set(i64::from(status.health == "healthy"));
            metrics.backend_jobs.get_or_create(&labels).set(status.running as i64);
        }
    }
    let pool = state.store.pool_stats();
    metrics.db_connections.get_or_create(&StateLabels { state: "idle".into() }).set(i64::from(pool.idle));
    metrics
        .db_connections
        .get_or_create(&StateLabels { state: "in_use".into() })
        .set(i64::from(pool.open.saturating_sub(pool.idle)));
    Ok(([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
        .into_response())
}
