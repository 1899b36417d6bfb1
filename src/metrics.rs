//! Prometheus metrics (`GET /metrics`, OpenMetrics text): counters and histograms updated where
//! things happen (HTTP requests, generations, renders, webhook attempts), and gauges read from the
//! database and this node's engine at each scrape. One [`Metrics`] per server, so test servers in
//! one process do not mix their numbers. No label carries an unbounded value: routes are the
//! router's patterns (`/api/rest/v1/generations/{id}`), backends the configured names.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// `delivered` or `failed`.
    pub outcome: String,
    /// The attempt's error class (`connect`, `timeout`, `http_status`, ...), `none` if delivered.
    pub error_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn render_histogram() -> Histogram {
    // 10 ms to about 20 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_duration: HistogramFamily<RouteLabels>,
    pub generations_created: Counter,
    pub generations_handed_over: Counter,
    pub generations_finished: Family<StatusLabels, Counter>,
    pub render_duration: HistogramFamily<BackendLabels>,
    pub attempts: Family<AttemptLabels, Counter>,
    pub attempt_duration: Histogram,
    pub render_queue: Gauge,
    pub deliveries_pending: Gauge,
    pub oldest_due_age: Gauge<f64, AtomicU64>,
    pub deliveries_held: Gauge,
    pub webhooks_disabled: Gauge,
    pub backends_healthy: Family<BackendLabels, Gauge>,
    pub backend_jobs: Family<BackendLabels, Gauge>,
    pub db_connections: Family<StateLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("easel");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<RouteLabels> = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route and method",
            Unit::Seconds,
            http_duration.clone(),
        );
        let generations_created = Counter::default();
        registry.register("generations_created", "Generations accepted", generations_created.clone());
        let generations_handed_over = Counter::default();
        registry.register(
            "generations_handed_over",
            "Generations handed straight to this node's render workers, leased at birth (no claim)",
            generations_handed_over.clone(),
        );
        let generations_finished = Family::<StatusLabels, Counter>::default();
        registry.register(
            "generations_finished",
            "Generations finished, by status (COMPLETE or FAILED)",
            generations_finished.clone(),
        );
        let render_duration: HistogramFamily<BackendLabels> = Family::new_with_constructor(render_histogram);
        registry.register_with_unit(
            "render_duration",
            "Time from claiming a generation to its images (builtin or the backend's name)",
            Unit::Seconds,
            render_duration.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register("webhook_attempts", "Webhook attempts, by outcome and error class", attempts.clone());
        let attempt_duration = latency_histogram();
        registry.register_with_unit(
            "webhook_attempt_duration",
            "Time of one webhook attempt (connect, TLS, request, response)",
            Unit::Seconds,
            attempt_duration.clone(),
        );
        let render_queue = Gauge::default();
        registry.register(
            "render_queue_depth",
            "Jobs waiting to be rendered (pending, not claimed)",
            render_queue.clone(),
        );
        let deliveries_pending = Gauge::default();
        registry.register(
            "webhook_deliveries_pending",
            "Webhook deliveries not yet delivered or failed",
            deliveries_pending.clone(),
        );
        let oldest_due_age = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "webhook_oldest_due_age",
            "How long the oldest due delivery has been due (0 when none is)",
            Unit::Seconds,
            oldest_due_age.clone(),
        );
        let deliveries_held = Gauge::default();
        registry.register(
            "webhook_deliveries_held",
            "Deliveries this node's engine holds in memory (queued, in flight or being recorded)",
            deliveries_held.clone(),
        );
        let webhooks_disabled = Gauge::default();
        registry.register(
            "webhooks_disabled",
            "API keys whose webhook is disabled for failing (their deliveries are held), cluster",
            webhooks_disabled.clone(),
        );
        let backends_healthy = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "backend_healthy",
            "1 while this node sees the inference backend healthy, else 0",
            backends_healthy.clone(),
        );
        let backend_jobs = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "backend_jobs_running",
            "Jobs running on each inference backend, all nodes",
            backend_jobs.clone(),
        );
        let db_connections = Family::<StateLabels, Gauge>::default();
        registry.register(
            "database_connections",
            "Database pool connections, by state (idle, in_use)",
            db_connections.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            generations_created,
            generations_handed_over,
            generations_finished,
            render_duration,
            attempts,
            attempt_duration,
            render_queue,
            deliveries_pending,
            oldest_due_age,
            deliveries_held,
            webhooks_disabled,
            backends_healthy,
            backend_jobs,
            db_connections,
        }
    }

    /// Counts a finished generation (`COMPLETE` or `FAILED`).
    pub fn generation_finished(&self, status: &str) {
        self.generations_finished.get_or_create(&StatusLabels { status: status.to_string() }).inc();
    }

    /// Counts a webhook attempt.
    pub fn attempt(&self, error_class: Option<&str>, seconds: f64) {
        let labels = AttemptLabels {
            outcome: if error_class.is_none() { "delivered" } else { "failed" }.into(),
            error_class: error_class.unwrap_or("none").into(),
        };
        self.attempts.get_or_create(&labels).inc();
        self.attempt_duration.observe(seconds);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let metrics = Metrics::new();
        metrics.generations_created.inc();
        metrics.generation_finished("COMPLETE");
        metrics.attempt(Some("timeout"), 0.25);
        let text = metrics.encode();
        assert!(text.contains("easel_generations_created_total 1"), "{text}");
        assert!(text.contains("easel_generations_finished_total{status=\"COMPLETE\"} 1"), "{text}");
        assert!(text.contains("easel_webhook_attempts_total{outcome=\"failed\",error_class=\"timeout\"} 1"), "{text}");
        assert!(text.contains("easel_webhook_attempt_duration_seconds_count 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
