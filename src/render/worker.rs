//! Render workers: claim pending jobs from the store (with a lease), wait out the simulated
//! duration, render, store the files, then record the outcome. Woken at once by the API when a job
//! is created on this node, and by a slow poll for everything else (jobs recovered after a crash,
//! jobs created by other processes).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{GenerateRequest, Renderer};
use crate::clock::Millis;
use crate::clock::now_ms;
use crate::config::RenderConfig;
use crate::images::{self, ImageStore};
use crate::models::Catalogue;
use crate::store::{Generation, Image, JobOutcome, JobStatus, NewImage, RenderJob, RenderWork, Store, Variation};
use crate::webhook::outbox::Outbox;

/// Everything a render worker needs; shared by all of this node's jobs.
pub struct RenderWorkers {
    pub store: Arc<dyn Store>,
    pub renderer: Arc<dyn Renderer>,
    pub images: ImageStore,
    pub catalogue: Arc<Catalogue>,
    pub config: RenderConfig,
    /// This process's lease owner name.
    pub node_id: String,
    /// Signalled when a job is created on this node.
    pub wakeup: Arc<Notify>,
    /// Builds the webhook delivery of each finished generation.
    pub outbox: Outbox,
}

/// What happened to one job, for logs and tests.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    Complete,
    Failed,
    /// The job was deleted or taken over while it ran; nothing was recorded.
    Abandoned,
    /// Image storage failed: the job waits, then is tried again.
    Postponed,
}

impl RenderWorkers {
    /// Claims and runs jobs until `shutdown`; then gives the jobs in hand `grace` to finish. A job
    /// cut short keeps its lease and is rendered again after the restart.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let slots = Arc::new(Semaphore::new(self.config.max_jobs_in_flight));
        let mut running = JoinSet::new();
        while !shutdown.is_cancelled() {
            let free = slots.available_permits() as u32;
            let claimed = if free > 0 { self.claim(free).await } else { Vec::new() };
            let claimed_any = !claimed.is_empty();
            for job in claimed {
                let permit = slots.clone().acquire_owned().await.expect("semaphore is never closed");
                let workers = self.clone();
                running.spawn(async move {
                    workers.run_job(job).await;
                    drop(permit);
                });
            }
            while running.try_join_next().is_some() {}
            if claimed_any && slots.available_permits() > 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = self.wakeup.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        let drained = tokio::time::timeout(grace, async { while running.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(jobs = running.len(), "render jobs cut short by shutdown; they resume at the next start");
            running.abort_all();
        }
    }

    async fn claim(&self, limit: u32) -> Vec<RenderJob> {
        let now = now_ms();
        let lease_until = now + self.config.lease.as_millis() as i64;
        match self.store.claim_render_jobs(&self.node_id, now, lease_until, limit).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error.message = %e, "cannot claim render jobs; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                Vec::new()
            }
        }
    }

    /// Runs one claimed job to its end. Image storage failing makes the job wait and try again
    /// (backing off) until `max_attempts`, then FAILED; store errors leave the lease to expire, so
    /// the job is tried again later.
    pub async fn run_job(&self, job: RenderJob) -> Option<Finished> {
        if !self.config.simulated_duration.is_zero() {
            tokio::time::sleep(self.config.simulated_duration).await;
        }
        let id = job.work.id();
        let result = match &job.work {
            RenderWork::Generation(generation) => self.run_generation(generation, job.attempt).await,
            RenderWork::Upscale { variation, source } => self.run_upscale(variation, source).await,
        };
        let result = match result {
            Err(JobError::Storage(error)) => self.storage_failed(&job, error).await,
            other => other,
        };
        match result {
            Ok(finished) => Some(finished),
            Err(e) => {
                tracing::error!(job = ?id, error.message = %e, "render job could not be recorded; it will be retried");
                None
            }
        }
    }

    /// Image storage failed for `job`: try again later, or give up after the last attempt.
    async fn storage_failed(&self, job: &RenderJob, error: object_store::Error) -> Result<Finished, JobError> {
        let id = job.work.id();
        if job.attempt >= self.config.max_attempts {
            let reason = format!("image storage failed on each of {} attempts; the last error: {error}", job.attempt);
            tracing::error!(job = ?id, reason, "render job failed");
            return match &job.work {
                RenderWork::Generation(generation) => {
                    self.finish_generation(generation, &JobOutcome::Failed { reason }, &[]).await
                }
                RenderWork::Upscale { variation, .. } => {
                    self.finish_upscale(variation, JobOutcome::Failed { reason }).await
                }
            };
        }
        let backoff = self.config.retry_backoff.saturating_mul(1 << job.attempt.saturating_sub(1).min(16));
        let backoff = backoff.min(self.config.lease);
        let now = now_ms();
        tracing::warn!(
            job = ?id,
            attempt = job.attempt,
            max_attempts = self.config.max_attempts,
            retry_in = %humantime::format_duration(backoff),
            error.message = %error,
            "image storage failed; the job will be tried again"
        );
        self.store.postpone_render_job(id, &self.node_id, now + backoff.as_millis() as Millis, now).await?;
        Ok(Finished::Postponed)
    }

    async fn run_generation(&self, generation: &Generation, attempt: u32) -> Result<Finished, JobError> {
        let params = &generation.params;
        let model_name = self.catalogue.get(&params.model_id).map(|m| m.name.clone()).unwrap_or_else(|| "Model".into());
        let init_image = match params.init_generation_image_id {
            Some(id) => match self.store.get_image(generation.user_id, id).await? {
                Some(image) => self.images.get(&image.storage_key).await?,
                None => None,
            },
            None => None,
        };
        if params.init_generation_image_id.is_some() && init_image.is_none() {
            let outcome = JobOutcome::Failed { reason: "the init image no longer exists".into() };
            return self.finish_generation(generation, &outcome, &[]).await;
        }
        let rendered = self.renderer.generate(GenerateRequest { params: params.clone(), init_image }).await;
        let outcome = match rendered {
            Ok(rendered) => {
                let mut new_images = Vec::with_capacity(rendered.len());
                for (index, image) in rendered.into_iter().enumerate() {
                    let index = index as u32;
                    let key = images::generation_image_key(
                        generation.user_id,
                        generation.id,
                        &model_name,
                        &params.prompt,
                        index,
                    );
                    self.images.put(&key, image.jpeg).await?;
                    new_images.push(NewImage {
                        id: images::image_id(generation.id, index),
                        index,
                        storage_key: key,
                        width: image.width,
                        height: image.height,
                    });
                }
                JobOutcome::Complete(new_images)
            }
            Err(e) => JobOutcome::Failed { reason: e.to_string() },
        };
        if attempt > 1 && matches!(outcome, JobOutcome::Complete(_)) {
            tracing::info!(generation.id = %generation.id, attempt, "generation rendered after earlier attempts failed");
        }
        let keys: Vec<String> = match &outcome {
            JobOutcome::Complete(images) => images.iter().map(|i| i.storage_key.clone()).collect(),
            JobOutcome::Failed { .. } => Vec::new(),
        };
        self.finish_generation(generation, &outcome, &keys).await
    }

    async fn finish_generation(
        &self,
        generation: &Generation,
        outcome: &JobOutcome<Vec<NewImage>>,
        written: &[String],
    ) -> Result<Finished, JobError> {
        let at = now_ms();
        let finished = finished_record(generation, outcome, at);
        let prepared = self.outbox.prepare(&*self.store, &finished, at).await?;
        let delivery = prepared.as_ref().map(|prepared| &prepared.delivery);
        if self.store.finish_generation(generation.id, &self.node_id, at, outcome, delivery).await? {
            if let Some(prepared) = prepared {
                prepared.dispatch();
            }
            let finished = match outcome {
                JobOutcome::Complete(_) => Finished::Complete,
                JobOutcome::Failed { reason } => {
                    tracing::warn!(generation.id = %generation.id, reason, "generation failed");
                    Finished::Failed
                }
            };
            tracing::debug!(generation.id = %generation.id, ?finished, "generation finished");
            return Ok(finished);
        }
        // Deleted while rendering: remove the files just written. (Taken over by another worker:
        // that worker writes the same keys, so they stay.)
        if self.store.get_generation(generation.user_id, generation.id).await?.is_none()
            && let Err(e) = self.images.delete(written).await
        {
            tracing::warn!(generation.id = %generation.id, error.message = %e, "cannot delete the files of a generation deleted while it rendered");
        }
        Ok(Finished::Abandoned)
    }

    async fn run_upscale(&self, variation: &Variation, source: &Image) -> Result<Finished, JobError> {
        let outcome = match self.images.get(&source.storage_key).await? {
            None => JobOutcome::Failed { reason: "the source image no longer exists".into() },
            Some(bytes) => match self.renderer.upscale(bytes).await {
                Ok(upscaled) => {
                    let key = images::variation_image_key(variation.user_id, variation.generation_id, variation.id);
                    self.images.put(&key, upscaled.jpeg).await?;
                    JobOutcome::Complete(key)
                }
                Err(e) => JobOutcome::Failed { reason: e.to_string() },
            },
        };
        self.finish_upscale(variation, outcome).await
    }

    async fn finish_upscale(&self, variation: &Variation, outcome: JobOutcome<String>) -> Result<Finished, JobError> {
        if self.store.finish_variation(variation.id, &self.node_id, now_ms(), &outcome).await? {
            return Ok(match outcome {
                JobOutcome::Complete(_) => Finished::Complete,
                JobOutcome::Failed { .. } => Finished::Failed,
            });
        }
        if let JobOutcome::Complete(key) = outcome
            && self.store.get_variation(variation.user_id, variation.id).await?.is_none()
            && let Err(e) = self.images.delete(&[key]).await
        {
            tracing::warn!(variation.id = %variation.id, error.message = %e, "cannot delete the file of a variation deleted while it rendered");
        }
        Ok(Finished::Abandoned)
    }
}

/// Why a job could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Image storage failed: the job is tried again later, then failed.
    #[error("image storage: {0}")]
    Storage(#[from] object_store::Error),
    /// The database failed: the job's lease expires and it is claimed again.
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The generation as it is once `outcome` is recorded at `at`.
fn finished_record(generation: &Generation, outcome: &JobOutcome<Vec<NewImage>>, at: Millis) -> Generation {
    let mut finished = generation.clone();
    finished.updated_at = at;
    match outcome {
        JobOutcome::Complete(images) => {
            finished.status = JobStatus::Complete;
            finished.images = images
                .iter()
                .map(|image| Image {
                    id: image.id,
                    generation_id: generation.id,
                    user_id: generation.user_id,
                    index: image.index,
                    storage_key: image.storage_key.clone(),
                    width: image.width,
                    height: image.height,
                    created_at: at,
                    variations: Vec::new(),
                })
                .collect();
        }
        JobOutcome::Failed { reason } => {
            finished.status = JobStatus::Failed;
            finished.failure_reason = Some(reason.clone());
        }
    }
    finished
}
