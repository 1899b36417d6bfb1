//! Which inference backend runs which job. Each `[[backends]]` entry becomes a [`BackendSlot`]:
//! its adapter, the models it serves, its health as this node sees it, and the jobs this node
//! runs on it. A health monitor per backend probes it (every `health_interval` while healthy,
//! backing off from 1 s while not) and takes it out of the rotation when a probe or a job finds
//! it not working; the render workers claim jobs for a backend only while it is healthy and has
//! a free slot, and the store counts the slots across every node (`claim_backend_jobs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::backends::{self, Adapter};
use crate::clock::{Millis, now_ms};
use crate::config::BackendConfig;
use crate::models::Catalogue;
use crate::setting::InvalidSetting;
use crate::store::{BackendHealth, Store};

/// Longest a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait before probing again a backend found not working; doubled up to `health_interval`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// One inference backend, as this node sees and uses it.
pub struct BackendSlot {
    pub config: BackendConfig,
    pub adapter: Arc<dyn Adapter>,
    /// The models whose jobs it runs.
    pub models: Vec<Uuid>,
    /// The variations of its models' images it runs ([`crate::records::Transform::name`]s).
    pub transforms: Vec<&'static str>,
    /// Jobs this node runs on it now.
    running: AtomicU32,
    health: Mutex<Health>,
    /// Wakes the health monitor early (a job found the backend not working).
    recheck: Notify,
}

/// A backend's health as this node last saw it.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// `None` until the first probe.
    pub healthy: Option<bool>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Millis>,
    /// Since when it has not been working (or since start, before the first successful probe).
    pub unavailable_since: Option<Millis>,
    pub checked_at: Option<Millis>,
}

impl BackendSlot {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn health(&self) -> Health {
        self.health.lock().expect("health lock").clone()
    }

    pub fn is_healthy(&self) -> bool {
        self.health().healthy == Some(true)
    }

    pub fn running(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
    }

    /// Jobs this node could still start on it (the store has the last word, all nodes counted).
    pub fn room(&self) -> u32 {
        self.config.max_concurrent.saturating_sub(self.running())
    }

    /// Counts a job as running here until the guard drops.
    pub fn start_job(self: &Arc<Self>) -> RunningJob {
        self.running.fetch_add(1, Ordering::Relaxed);
        RunningJob(self.clone())
    }

    /// A job found the backend not working: out of the rotation until a probe passes.
    pub fn failed(&self, error: &str) {
        self.set(false, Some(error.to_string()));
        self.recheck.notify_one();
    }

    fn set(&self, healthy: bool, error: Option<String>) -> bool {
        let now = now_ms();
        let mut health = self.health.lock().expect("health lock");
        let changed = health.healthy != Some(healthy);
        health.healthy = Some(healthy);
        health.checked_at = Some(now);
        if healthy {
            health.unavailable_since = None;
        } else {
            health.unavailable_since.get_or_insert(now);
        }
        if let Some(error) = error {
            health.last_error = Some(error);
            health.last_error_at = Some(now);
        }
        changed
    }
}

/// Un-counts a running job when dropped.
pub struct RunningJob(Arc<BackendSlot>);

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every configured backend, and which models they serve.
pub struct Backends {
    pub list: Vec<Arc<BackendSlot>>,
    /// Model id to the indexes (in `list`) of the backends that run it.
    by_model: HashMap<Uuid, Vec<usize>>,
    /// Every model that backends run (the built-in renderer skips their jobs).
    served: Vec<Uuid>,
    /// Every (model, transform) whose variations backends run.
    served_variations: Vec<(Uuid, &'static str)>,
    started_at: Millis,
}

impl Backends {
    /// From the configuration; models without `backends` stay with the built-in renderer.
    pub fn new(configs: &[BackendConfig], catalogue: &Catalogue) -> Result<Backends, InvalidSetting> {
        let mut list = Vec::with_capacity(configs.len());
        let mut by_model: HashMap<Uuid, Vec<usize>> = HashMap::new();
        for (index, config) in configs.iter().enumerate() {
            let models: Vec<Uuid> = catalogue
                .list()
                .into_iter()
                .filter(|model| model.backends.iter().any(|name| name == &config.name))
                .map(|model| model.id)
                .collect();
            for model in &models {
                by_model.entry(*model).or_default().push(index);
            }
            list.push(Arc::new(BackendSlot {
                config: config.clone(),
                adapter: backends::adapter(config)?,
                transforms: config.variation_transforms(),
                models,
                running: AtomicU32::new(0),
                health: Mutex::new(Health::default()),
                recheck: Notify::new(),
            }));
        }
        let mut served: Vec<Uuid> = by_model.keys().copied().collect();
        served.sort();
        let mut served_variations: Vec<(Uuid, &'static str)> = list
            .iter()
            .flat_map(|slot| slot.models.iter().flat_map(|model| slot.transforms.iter().map(|t| (*model, *t))))
            .collect();
        served_variations.sort();
        served_variations.dedup();
        Ok(Backends { list, by_model, served, served_variations, started_at: now_ms() })
    }

    /// The models whose jobs backends run.
    pub fn served_models(&self) -> &[Uuid] {
        &self.served
    }

    /// The (model, transform) pairs whose variations backends run: a variation of an image of
    /// that model with that transform; the built-in renderer runs all others.
    pub fn served_variations(&self) -> &[(Uuid, &'static str)] {
        &self.served_variations
    }

    /// Whether a backend of `model` runs variations with `transform`.
    pub fn serves_variation(&self, model: &Uuid, transform: &str) -> bool {
        self.served_variations.iter().any(|(m, t)| m == model && *t == transform)
    }

    /// Whether a backend other than `backend` runs `transform` for `model`.
    pub fn others_serve_variation(&self, model: &Uuid, transform: &str, backend: &str) -> bool {
        self.by_model.get(model).is_some_and(|list| {
            list.iter()
                .any(|&index| self.list[index].name() != backend && self.list[index].transforms.contains(&transform))
        })
    }

    /// Models none of whose backends has been available since at least `since` (this node's
    /// view; before the first probe, since start-up).
    pub fn models_unavailable_since(&self, since: Millis) -> Vec<Uuid> {
        let mut models: Vec<Uuid> = self
            .by_model
            .iter()
            .filter(|(_, backends)| {
                backends.iter().all(|&index| {
                    let health = self.list[index].health();
                    match health.healthy {
                        Some(true) => false,
                        Some(false) => health.unavailable_since.is_some_and(|at| at <= since),
                        None => self.started_at <= since,
                    }
                })
            })
            .map(|(model, _)| *model)
            .collect();
        models.sort();
        models
    }

    /// Whether a backend other than `backend` runs `model`.
    pub fn others_serve(&self, model: &Uuid, backend: &str) -> bool {
        self.by_model.get(model).is_some_and(|list| list.iter().any(|&index| self.list[index].name() != backend))
    }

    /// The last errors of a model's backends, for a failure reason.
    pub fn errors_of_model(&self, model: &Uuid) -> String {
        let errors: Vec<String> = self
            .by_model
            .get(model)
            .into_iter()
            .flatten()
            .map(|&index| {
                let backend = &self.list[index];
                match backend.health().last_error {
                    Some(error) => error,
                    None => format!("{} has not answered a health check", backend.name()),
                }
            })
            .collect();
        errors.join("; ")
    }

    /// Starts one health monitor per backend, until `stop`. `wakeup` is signalled when a backend
    /// comes back into the rotation, so waiting jobs are claimed at once.
    pub fn monitor(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        node_id: String,
        wakeup: Arc<Notify>,
        stop: CancellationToken,
    ) {
        for backend in &self.list {
            tokio::spawn(monitor(backend.clone(), store.clone(), node_id.clone(), wakeup.clone(), stop.clone()));
        }
    }
}

async fn monitor(
    backend: Arc<BackendSlot>,
    store: Arc<dyn Store>,
    node_id: String,
    wakeup: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut retry = FIRST_RETRY;
    while !stop.is_cancelled() {
        let probe = tokio::time::timeout(PROBE_TIMEOUT, backend.adapter.health()).await;
        let error = match probe {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("{} did not answer its health check within {PROBE_TIMEOUT:?}", backend.name())),
        };
        let healthy = error.is_none();
        if backend.set(healthy, error.clone()) {
            match &error {
                None => tracing::info!(backend = backend.name(), "backend is healthy; it is in the rotation"),
                Some(e) => {
                    tracing::warn!(backend = backend.name(), error.message = %e, "backend is not working; it is out of the rotation")
                }
            }
        }
        if healthy {
            wakeup.notify_one();
        }
        let health = backend.health();
        let row = BackendHealth {
            name: backend.name().to_string(),
            node_id: node_id.clone(),
            healthy,
            last_error: error,
            last_error_at: if healthy { None } else { health.last_error_at },
            checked_at: health.checked_at.unwrap_or_else(now_ms),
        };
        if let Err(e) = store.record_backend_health(&row).await {
            tracing::debug!(backend = backend.name(), error.message = %e, "cannot record backend health");
        }
        let wait = if healthy {
            retry = FIRST_RETRY;
            backend.config.health_interval
        } else {
            let wait = retry.min(backend.config.health_interval);
            retry = (retry * 2).min(backend.config.health_interval);
            wait
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
            // A job found it not working: probe again soon, not at once (it just failed).
            _ = backend.recheck.notified(), if healthy => {
                tokio::time::sleep(FIRST_RETRY).await;
            }
        }
    }
}
