//! Render workers: claim pending jobs from the store (with a lease), wait out the simulated
//! duration, render, store the files, then record the outcome. Woken at once by the API when a job
//! is created on this node, and by a slow poll for everything else (jobs recovered after a crash,
//! jobs created by other processes).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::backends::{BackendError, BackendImage, BackendJob, ControlUnit, TransformJob};
use super::dispatch::{BackendSlot, Backends};
use super::handoff::{Handed, Handoff};
use super::{GenerateRequest, Guides, RenderError, RenderedImage, Renderer};
use crate::clock::Millis;
use crate::clock::now_ms;
use crate::config::RenderConfig;
use crate::images::{self, ImageStore};
use crate::models::Catalogue;
use crate::store::{
    BackendClaim, Generation, Image, JobOutcome, JobStatus, NewImage, RenderJob, RenderJobId, RenderWork, Store,
    Variation,
};
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
    /// Signalled when a job is created on this node and not handed over.
    pub wakeup: Arc<Notify>,
    /// This node's render slots, and the jobs the API hands over.
    pub handoff: Arc<Handoff>,
    /// Builds the webhook delivery of each finished generation.
    pub outbox: Outbox,
    /// The inference servers of `[[backends]]` and the models they run.
    pub backends: Arc<Backends>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Generations that timed out on a backend, kept off it until the instant given, so they go to
    /// another backend of their model first (a server that hangs on jobs but passes its probe
    /// would otherwise get them straight back). This node's view only: a hint, not a rule.
    pub avoid: std::sync::Mutex<std::collections::HashMap<crate::ids::GenerationId, (String, std::time::Instant)>>,
}

/// Where a claimed job runs.
#[derive(Clone)]
enum Route {
    Builtin,
    Backend(Arc<BackendSlot>),
    /// No backend of the job's model has been available for `no_backend_timeout`: it fails.
    Stranded,
}

/// How often a job running on a backend checks that its generation still exists (a delete
/// cancels it on the server).
const DELETE_POLL: Duration = Duration::from_millis(500);

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
    /// Claims and runs jobs until `shutdown`, and runs the jobs the API hands over (`handed`,
    /// each with its slot); then gives the jobs in hand `grace` to finish. A job cut short keeps
    /// its lease and is rendered again after the restart.
    pub async fn run(
        self: Arc<Self>,
        mut handed: mpsc::UnboundedReceiver<Handed>,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let slots = self.handoff.slots.clone();
        let mut running = JoinSet::new();
        let start = |running: &mut JoinSet<bool>, job: RenderJob, route: Route, permit: OwnedSemaphorePermit| {
            let workers = self.clone();
            let on_backend = matches!(route, Route::Backend(_));
            running.spawn(async move {
                workers.run_job(job, route).await;
                drop(permit);
                on_backend
            });
        };
        // Claim when something may be waiting: at start, when woken (a job created here that was
        // not handed over, a backend back), at each poll, and when a job ends if the last claim
        // filled every free slot (more may be waiting) or the job freed a backend's slot. A job
        // ending otherwise claims nothing: an empty claim is a write transaction for nothing.
        let mut claim_now = true;
        let mut more = true;
        // The poll keeps its own beat: jobs no signal announces (a lease run out on a node that
        // died, a job postponed after a storage failure) are found even while handed-over jobs
        // and job ends keep the loop busy.
        let mut poll = tokio::time::interval(self.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !shutdown.is_cancelled() {
            if claim_now {
                // The free slots are taken before the claim (the API cannot hand a job into one
                // meanwhile); those the claim does not fill are given back after it.
                let free = slots.available_permits() as u32;
                if free > 0 {
                    let Ok(mut permits) = slots.clone().try_acquire_many_owned(free) else {
                        continue; // a slot was handed a job meanwhile: count again
                    };
                    let claimed = self.claim(free).await;
                    more = claimed.len() as u32 >= free;
                    for (job, route) in claimed {
                        start(&mut running, job, route, permits.split(1).expect("one slot per claimed job"));
                    }
                } else {
                    more = true;
                }
                self.handoff.claimed(more);
            }
            claim_now = false;
            while let Ok((job, permit)) = handed.try_recv() {
                start(&mut running, job, Route::Builtin, permit);
            }
            while let Some(ended) = running.try_join_next() {
                claim_now |= more || ended.unwrap_or(true);
            }
            if claim_now && slots.available_permits() > 0 {
                continue;
            }
            let mut arrived = None;
            claim_now = tokio::select! {
                _ = shutdown.cancelled() => false,
                _ = self.wakeup.notified() => true,
                _ = poll.tick() => true,
                Some(job) = handed.recv() => {
                    arrived = Some(job);
                    false
                }
                Some(ended) = running.join_next(), if !running.is_empty() => more || ended.unwrap_or(true),
            };
            if let Some((job, permit)) = arrived {
                start(&mut running, job, Route::Builtin, permit);
            }
        }
        let drained = tokio::time::timeout(grace, async { while running.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(jobs = running.len(), "render jobs cut short by shutdown; they resume at the next start");
            running.abort_all();
        }
    }

    /// Claims up to `limit` jobs: for each healthy backend with a free slot, jobs of its models;
    /// jobs whose models have had no backend for too long (to fail them); then built-in jobs.
    async fn claim(&self, limit: u32) -> Vec<(RenderJob, Route)> {
        let now = now_ms();
        let mut claimed = Vec::new();
        let avoid: Vec<(String, String)> = {
            let mut avoid = self.avoid.lock().unwrap_or_else(|e| e.into_inner());
            let at = std::time::Instant::now();
            avoid.retain(|_, (_, until)| *until > at);
            avoid.iter().map(|(id, (backend, _))| (backend.clone(), id.to_string())).collect()
        };
        let result = async {
            for backend in &self.backends.list {
                let room = backend.room().min(limit - claimed.len() as u32);
                if room == 0 || !backend.is_healthy() {
                    continue;
                }
                let skip: Vec<String> =
                    avoid.iter().filter(|(name, _)| name == backend.name()).map(|(_, id)| id.clone()).collect();
                let lease_until = now + self.backend_lease(backend).as_millis() as i64;
                let claim = BackendClaim {
                    owner: &self.node_id,
                    backend: backend.name(),
                    max_concurrent: backend.config.max_concurrent,
                    models: &backend.models,
                    now,
                    lease_until,
                    limit: room,
                    skip: &skip,
                    transforms: &backend.transforms,
                };
                for job in self.store.claim_backend_jobs(&claim).await? {
                    claimed.push((job, Route::Backend(backend.clone())));
                }
            }
            let lease_until = now + self.config.lease.as_millis() as i64;
            let waited_since = now - self.config.no_backend_timeout.as_millis() as i64;
            let stranded = self.backends.models_unavailable_since(waited_since);
            let room = limit - claimed.len() as u32;
            if !stranded.is_empty() && room > 0 {
                let variations: Vec<(uuid::Uuid, &str)> = self
                    .backends
                    .served_variations()
                    .iter()
                    .filter(|(model, _)| stranded.contains(model))
                    .copied()
                    .collect();
                for job in self
                    .store
                    .claim_stranded_jobs(&self.node_id, now, lease_until, &stranded, &variations, waited_since, room)
                    .await?
                {
                    claimed.push((job, Route::Stranded));
                }
            }
            let room = limit - claimed.len() as u32;
            if room > 0 {
                let skip = self.backends.served_models();
                let skip_variations = self.backends.served_variations();
                for job in
                    self.store.claim_render_jobs(&self.node_id, now, lease_until, room, skip, skip_variations).await?
                {
                    claimed.push((job, Route::Builtin));
                }
            }
            Ok::<(), crate::store::StoreError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(error.message = %e, "cannot claim render jobs; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        claimed
    }

    /// A job on `backend` holds its lease for the backend's timeout and a minute more, so no
    /// other node takes it over while the server works on it.
    fn backend_lease(&self, backend: &BackendSlot) -> Duration {
        self.config.lease.max(backend.config.timeout + Duration::from_secs(60))
    }

    /// Runs one claimed job to its end, where `route` says (the simulated duration applies to the
    /// built-in renderer only). Image storage failing makes the job wait and try again (backing
    /// off) until `max_attempts`, then FAILED; store errors leave the lease to expire, so the job
    /// is tried again later.
    async fn run_job(&self, job: RenderJob, route: Route) -> Option<Finished> {
        if matches!(route, Route::Builtin) && !self.config.simulated_duration.is_zero() {
            tokio::time::sleep(self.config.simulated_duration).await;
        }
        let id = job.work.id();
        let result = match &job.work {
            RenderWork::Generation(generation) => self.run_generation_on(generation, job.attempt, route).await,
            RenderWork::Variation { variation, source } => match route {
                Route::Builtin => self.run_variation(variation, source).await,
                Route::Backend(backend) => self.run_variation_on(&backend, variation, source, job.attempt).await,
                Route::Stranded => self.strand_variation(variation).await,
            },
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
                RenderWork::Variation { variation, .. } => {
                    self.finish_variation(variation, JobOutcome::Failed { reason }).await
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

    async fn run_generation_on(
        &self,
        generation: &Generation,
        attempt: u32,
        route: Route,
    ) -> Result<Finished, JobError> {
        let started = std::time::Instant::now();
        let finished = self.render_generation(generation, attempt, &route).await;
        let backend = match &route {
            Route::Builtin => Some("builtin"),
            Route::Backend(backend) => Some(backend.name()),
            Route::Stranded => None,
        };
        if let (Some(backend), Ok(Finished::Complete | Finished::Failed)) = (backend, &finished) {
            let labels = crate::metrics::BackendLabels { backend: backend.to_string() };
            self.metrics.render_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        }
        finished
    }

    async fn render_generation(
        &self,
        generation: &Generation,
        attempt: u32,
        route: &Route,
    ) -> Result<Finished, JobError> {
        let params = &generation.params;
        if let Route::Stranded = route {
            let waited = humantime::format_duration(self.config.no_backend_timeout);
            let reason = format!(
                "no backend of this model has been available for {waited}: {}",
                self.backends.errors_of_model(&params.model_id)
            );
            return self.finish_generation(generation, &JobOutcome::Failed { reason }, &[]).await;
        }
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
        let init_image = match params.init_image_id {
            None => init_image,
            Some(id) => match self.uploaded_init_image(generation.user_id, id).await? {
                Ok(jpeg) => Some(jpeg),
                Err(reason) => return self.finish_generation(generation, &JobOutcome::Failed { reason }, &[]).await,
            },
        };
        let mut generation = std::borrow::Cow::Borrowed(generation);
        let rendered = match route {
            Route::Backend(backend) => match self.on_backend(backend, &generation, init_image, attempt).await? {
                BackendRun::Images(images, seed) => {
                    if let Some(seed) = seed.filter(|seed| *seed != generation.params.seed) {
                        generation.to_mut().params.seed = seed;
                        self.store.update_generation_params(generation.id, &self.node_id, &generation.params).await?;
                    }
                    Ok(images)
                }
                BackendRun::Failed(reason) => Err(RenderError(reason)),
                BackendRun::Done(finished) => return Ok(finished),
            },
            _ => match self.guides(&generation).await? {
                Ok(guides) => {
                    self.renderer.generate(GenerateRequest { params: params.clone(), init_image, guides }).await
                }
                Err(reason) => Err(RenderError(reason)),
            },
        };
        let generation = generation.as_ref();
        let params = &generation.params;
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

    /// Runs `generation` on `backend`: within its timeout, cancelled there if the generation is
    /// deleted meanwhile, and given back for another backend if this one is not working.
    async fn on_backend(
        &self,
        backend: &Arc<BackendSlot>,
        generation: &Generation,
        init_image: Option<bytes::Bytes>,
        attempt: u32,
    ) -> Result<BackendRun, JobError> {
        let params = &generation.params;
        let model = self.catalogue.get(&params.model_id);
        let job = BackendJob {
            id: generation.id.to_string(),
            model: model.and_then(|m| m.backend_model.clone()),
            prompt: prompt_with_loras(params),
            negative_prompt: params.negative_prompt.clone(),
            width: params.width,
            height: params.height,
            num_images: params.num_images,
            seed: params.seed,
            steps: params.inference_steps,
            guidance: params.guidance_scale,
            scheduler: params.scheduler.clone(),
            init_image,
            init_strength: params.init_strength,
            mask: None,
            controls: Vec::new(),
        };
        let job = match self.canvas_for_backend(generation, job).await? {
            Ok(job) => job,
            Err(reason) => return Ok(BackendRun::Failed(reason)),
        };
        let job = match self.controls_for_backend(backend, generation, job).await? {
            Ok(job) => job,
            Err(reason) => return Ok(BackendRun::Failed(reason)),
        };
        let timeout = backend.config.timeout;
        let result = self.run_on(backend, backend.adapter.generate(&job), self.deleted(generation)).await;
        let name = backend.name();
        match result {
            None => {
                tracing::info!(generation.id = %generation.id, backend = name, "generation deleted while it ran; cancelling it on the backend");
                backend.adapter.cancel(&job).await;
                Ok(BackendRun::Done(Finished::Abandoned))
            }
            Some(Err(_elapsed)) => {
                backend.adapter.cancel(&job).await;
                let waited = humantime::format_duration(timeout);
                let reason = format!(
                    "{name} did not finish the generation within its timeout of {waited}; it was cancelled there"
                );
                // A hung server leaves the rotation until a probe passes; the job tries another
                // backend of its model, if it has one, and stays off this one for two timeouts.
                backend.failed(&reason);
                let until = std::time::Instant::now() + timeout * 2;
                self.avoid.lock().unwrap_or_else(|e| e.into_inner()).insert(generation.id, (name.to_string(), until));
                if self.backends.others_serve(&params.model_id, name) && attempt < self.config.max_attempts {
                    return self.give_back(generation, name, attempt, &reason).await;
                }
                Ok(BackendRun::Failed(reason))
            }
            Some(Ok(Ok(images))) => match convert_images(images, job.num_images, name).await {
                Ok((images, seed)) => Ok(BackendRun::Images(images, seed)),
                Err(reason) => Ok(BackendRun::Failed(reason)),
            },
            Some(Ok(Err(BackendError::Failed(reason)))) => Ok(BackendRun::Failed(reason)),
            Some(Ok(Err(BackendError::Unavailable(reason)))) => {
                backend.failed(&reason);
                if attempt >= self.config.max_attempts {
                    return Ok(BackendRun::Failed(format!(
                        "no backend could run the generation in {attempt} attempts; the last error: {reason}"
                    )));
                }
                self.give_back(generation, name, attempt, &reason).await
            }
        }
    }

    /// Puts a job back in the queue at once, for another backend (or this one once it works).
    async fn give_back(
        &self,
        generation: &Generation,
        backend: &str,
        attempt: u32,
        reason: &str,
    ) -> Result<BackendRun, JobError> {
        tracing::warn!(generation.id = %generation.id, backend, attempt, error.message = %reason, "backend not working; the generation goes back to the queue");
        let now = now_ms();
        self.store.postpone_render_job(RenderJobId::Generation(generation.id), &self.node_id, now, now).await?;
        self.wakeup.notify_one();
        Ok(BackendRun::Done(Finished::Postponed))
    }

    /// Runs `call` on `backend`, holding one of its running slots, within its timeout; `None` when
    /// `deleted` (the job's row went away) finishes first. Wakes the workers after: the slot is free.
    async fn run_on<T>(
        &self,
        backend: &Arc<BackendSlot>,
        call: impl std::future::Future<Output = T>,
        deleted: impl std::future::Future<Output = ()>,
    ) -> Option<Result<T, tokio::time::error::Elapsed>> {
        let result = {
            let _running = backend.start_job();
            tokio::select! {
                result = tokio::time::timeout(backend.config.timeout, call) => Some(result),
                () = deleted => None,
            }
        };
        self.wakeup.notify_one();
        result
    }

    /// Resolves when `generation` no longer exists (deleted by its owner).
    async fn deleted(&self, generation: &Generation) {
        loop {
            tokio::time::sleep(DELETE_POLL).await;
            if let Ok(None) = self.store.get_generation(generation.user_id, generation.id).await {
                return;
            }
        }
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
            self.metrics.generation_finished(match outcome {
                JobOutcome::Complete(_) => "COMPLETE",
                JobOutcome::Failed { .. } => "FAILED",
            });
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

    /// An uploaded init image as the JPEG renderers and backends take, or why it cannot be used.
    async fn uploaded_init_image(
        &self,
        user: crate::ids::UserId,
        id: uuid::Uuid,
    ) -> Result<Result<bytes::Bytes, String>, JobError> {
        Ok(match self.uploaded_file(user, id).await? {
            Ok(bytes) => {
                super::to_jpeg(&bytes).map(|picture| picture.jpeg).map_err(|e| format!("init image {id}: {e}"))
            }
            Err(why) => Err(why),
        })
    }

    /// An uploaded file as it was uploaded, checked to be a picture of its declared type, or why
    /// it cannot be used.
    async fn uploaded_file(
        &self,
        user: crate::ids::UserId,
        id: uuid::Uuid,
    ) -> Result<Result<bytes::Bytes, String>, JobError> {
        let Some(image) = self.store.get_init_image(user, id).await? else {
            return Ok(Err(format!("init image {id} was deleted")));
        };
        let Some(bytes) = self.images.get(&image.storage_key).await? else {
            return Ok(Err(format!(
                "init image {id} was never uploaded (its upload policy expired at {})",
                crate::clock::rfc3339_ms(image.expires_at)
            )));
        };
        if let Err(why) = crate::uploads::check_picture(&bytes, &image.extension) {
            return Ok(Err(format!("init image {id} is not a {} picture Easel can use: {why}", image.extension)));
        }
        Ok(Ok(bytes))
    }

    /// `job` with a canvas request's picture as its init image and (for INPAINT and OUTPAINT) the
    /// mask to repaint, for backends that inpaint (`sdapi`), or why the pictures cannot be used.
    async fn canvas_for_backend(
        &self,
        generation: &Generation,
        mut job: BackendJob,
    ) -> Result<Result<BackendJob, String>, JobError> {
        let Some(canvas) = &generation.params.canvas else { return Ok(Ok(job)) };
        let guides = match self.guides(generation).await? {
            Ok(guides) => guides,
            Err(reason) => return Ok(Err(reason)),
        };
        let Some((init, mask)) = guides.canvas else { return Ok(Ok(job)) };
        match super::guides::canvas_for_backend(canvas, &init, mask.as_deref(), job.width, job.height) {
            Ok((init, mask, keep)) => {
                job.init_image = Some(init);
                job.mask = mask;
                job.init_strength = Some(generation.params.init_strength.unwrap_or(keep));
                Ok(Ok(job))
            }
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    /// `job` with the controlnets and image prompts of `generation` as the sd-webui-controlnet
    /// units `backend` maps them to (`controlnet_models`, `ip_adapter`), or why they cannot be used.
    async fn controls_for_backend(
        &self,
        backend: &BackendSlot,
        generation: &Generation,
        mut job: BackendJob,
    ) -> Result<Result<BackendJob, String>, JobError> {
        let params = &generation.params;
        if params.controlnets.is_empty() && params.image_prompts.is_empty() {
            return Ok(Ok(job));
        }
        let guides = match self.guides(generation).await? {
            Ok(guides) => guides,
            Err(reason) => return Ok(Err(reason)),
        };
        for (index, (control, (image, weight))) in params.controlnets.iter().zip(guides.controls).enumerate() {
            let Some((module, model)) = backend.config.controlnet(control.preprocessor_id) else {
                return Ok(Err(format!(
                    "controlnets[{index}].preprocessorId: {} has no controlnet for preprocessor {} \
                     (its `controlnet_models`)",
                    backend.name(),
                    control.preprocessor_id
                )));
            };
            job.controls.push(ControlUnit {
                image,
                module: module.to_string(),
                model: model.to_string(),
                weight,
                control_mode: control_mode(control.strength_type.as_deref()),
            });
        }
        if !guides.image_prompts.is_empty() {
            let Some((module, model)) = backend.config.ip_adapter_unit() else {
                return Ok(Err(format!("imagePrompts: {} has no IP-Adapter (its `ip_adapter`)", backend.name())));
            };
            for image in guides.image_prompts {
                job.controls.push(ControlUnit {
                    image,
                    module: module.to_string(),
                    model: model.to_string(),
                    weight: params.image_prompt_weight.unwrap_or(DEFAULT_IMAGE_PROMPT_WEIGHT),
                    control_mode: "Balanced",
                });
            }
        }
        Ok(Ok(job))
    }

    /// The canvas, controlnet and image prompt pictures of `generation`, or why one cannot be used.
    async fn guides(&self, generation: &Generation) -> Result<Result<Guides, String>, JobError> {
        let (user, params) = (generation.user_id, &generation.params);
        let mut guides = Guides::default();
        if let Some(canvas) = &params.canvas {
            let init = match self.uploaded_file(user, canvas.init_id).await? {
                Ok(bytes) => bytes,
                Err(why) => return Ok(Err(format!("canvasInitId: {why}"))),
            };
            let mask = match canvas.mask_id {
                None => None,
                Some(id) => match self.uploaded_file(user, id).await? {
                    Ok(bytes) => Some(bytes),
                    Err(why) => return Ok(Err(format!("canvasMaskId: {why}"))),
                },
            };
            guides.canvas = Some((init, mask));
        }
        for (index, control) in params.controlnets.iter().enumerate() {
            let picture = if control.init_image_type == "GENERATED" {
                match self.store.get_image(user, crate::ids::ImageId(control.init_image_id)).await? {
                    Some(image) => {
                        self.images.get(&image.storage_key).await?.ok_or_else(|| "its file is gone".to_string())
                    }
                    None => Err(format!("image {} no longer exists", control.init_image_id)),
                }
            } else {
                self.uploaded_file(user, control.init_image_id).await?
            };
            match picture {
                Ok(bytes) => guides.controls.push((bytes, control.weight)),
                Err(why) => return Ok(Err(format!("controlnets[{index}]: {why}"))),
            }
        }
        for (index, id) in params.image_prompts.iter().enumerate() {
            match self.uploaded_file(user, *id).await? {
                Ok(bytes) => guides.image_prompts.push(bytes),
                Err(why) => return Ok(Err(format!("imagePrompts[{index}]: {why}"))),
            }
        }
        Ok(Ok(guides))
    }

    /// Fails a variation none of whose model's backends has been available for too long.
    async fn strand_variation(&self, variation: &Variation) -> Result<Finished, JobError> {
        let model = self.variation_model(variation).await?;
        let waited = humantime::format_duration(self.config.no_backend_timeout);
        let errors = model.map(|model| self.backends.errors_of_model(&model)).unwrap_or_default();
        let reason = format!("no backend of this model has been available for {waited}: {errors}");
        self.finish_variation(variation, JobOutcome::Failed { reason }).await
    }

    /// The model of the generation a variation's image comes from (`None` once it is deleted).
    async fn variation_model(&self, variation: &Variation) -> Result<Option<uuid::Uuid>, JobError> {
        let generation = self.store.get_generation(variation.user_id, variation.generation_id).await?;
        Ok(generation.map(|generation| generation.params.model_id))
    }

    /// Runs `variation` on `backend`, like a generation: within the backend's timeout, cancelled
    /// there if the variation is deleted meanwhile, given back for another backend (or this one
    /// once it works) if this one is not working, FAILED with the server's words if it refuses.
    async fn run_variation_on(
        &self,
        backend: &Arc<BackendSlot>,
        variation: &Variation,
        source: &Image,
        attempt: u32,
    ) -> Result<Finished, JobError> {
        let started = std::time::Instant::now();
        let source_key = variation.source_key.as_deref().unwrap_or(&source.storage_key);
        let Some(bytes) = self.images.get(source_key).await? else {
            let reason = "the source image no longer exists".to_string();
            return self.finish_variation(variation, JobOutcome::Failed { reason }).await;
        };
        let Some(generation) = self.store.get_generation(variation.user_id, variation.generation_id).await? else {
            let reason = "the source image's generation no longer exists".to_string();
            return self.finish_variation(variation, JobOutcome::Failed { reason }).await;
        };
        let (width, height) = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .ok()
            .and_then(|reader| reader.into_dimensions().ok())
            .unwrap_or((source.width, source.height));
        let params = &generation.params;
        let model = self.catalogue.get(&params.model_id);
        let job = TransformJob {
            id: variation.id.to_string(),
            transform: variation.transform.clone(),
            source: bytes,
            generation: BackendJob {
                id: variation.id.to_string(),
                model: model.and_then(|m| m.backend_model.clone()),
                prompt: prompt_with_loras(params),
                negative_prompt: params.negative_prompt.clone(),
                width,
                height,
                num_images: 1,
                seed: params.seed,
                steps: params.inference_steps,
                guidance: params.guidance_scale,
                scheduler: params.scheduler.clone(),
                init_image: None,
                init_strength: None,
                mask: None,
                controls: Vec::new(),
            },
        };
        let timeout = backend.config.timeout;
        let result = self.run_on(backend, backend.adapter.transform(&job), self.variation_deleted(variation)).await;
        let name = backend.name();
        let transform = variation.transform.name();
        let give_back = |reason: String| async move {
            tracing::warn!(variation.id = %variation.id, backend = name, attempt, error.message = %reason, "backend not working; the variation goes back to the queue");
            let now = now_ms();
            self.store.postpone_render_job(RenderJobId::Variation(variation.id), &self.node_id, now, now).await?;
            self.wakeup.notify_one();
            Ok::<Finished, JobError>(Finished::Postponed)
        };
        let outcome = match result {
            None => {
                tracing::info!(variation.id = %variation.id, backend = name, "variation deleted while it ran; cancelling it on the backend");
                backend.adapter.cancel(&job.generation).await;
                return Ok(Finished::Abandoned);
            }
            Some(Err(_elapsed)) => {
                backend.adapter.cancel(&job.generation).await;
                let waited = humantime::format_duration(timeout);
                let reason = format!(
                    "{name} did not finish the variation within its timeout of {waited}; it was cancelled there"
                );
                backend.failed(&reason);
                if self.backends.others_serve_variation(&params.model_id, transform, name)
                    && attempt < self.config.max_attempts
                {
                    return give_back(reason).await;
                }
                JobOutcome::Failed { reason }
            }
            Some(Ok(Err(BackendError::Failed(reason)))) => JobOutcome::Failed { reason },
            Some(Ok(Err(BackendError::Unavailable(reason)))) => {
                backend.failed(&reason);
                if attempt >= self.config.max_attempts {
                    JobOutcome::Failed {
                        reason: format!(
                            "no backend could run the variation in {attempt} attempts; the last error: {reason}"
                        ),
                    }
                } else {
                    return give_back(reason).await;
                }
            }
            Some(Ok(Ok(image))) => {
                let for_transform = variation.transform.clone();
                let converted = tokio::task::spawn_blocking(move || {
                    super::transform::as_stored(&image.bytes, &for_transform)
                        .map_err(|e| format!("{name} returned an unusable image: {e}", name = "the backend"))
                })
                .await
                .unwrap_or_else(|e| Err(format!("converting the image failed: {e}")));
                match converted {
                    Ok(file) => {
                        let key = images::variation_image_key(
                            variation.user_id,
                            variation.generation_id,
                            variation.id,
                            variation.transform.extension(),
                        );
                        self.images.put(&key, file).await?;
                        JobOutcome::Complete(key)
                    }
                    Err(reason) => JobOutcome::Failed { reason: reason.replacen("the backend", name, 1) },
                }
            }
        };
        let finished = self.finish_variation(variation, outcome).await;
        if let Ok(Finished::Complete | Finished::Failed) = &finished {
            let labels = crate::metrics::BackendLabels { backend: name.to_string() };
            self.metrics.render_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        }
        finished
    }

    /// Resolves when `variation` no longer exists (its generation was deleted).
    async fn variation_deleted(&self, variation: &Variation) {
        loop {
            tokio::time::sleep(DELETE_POLL).await;
            if let Ok(None) = self.store.get_variation(variation.user_id, variation.id).await {
                return;
            }
        }
    }

    async fn run_variation(&self, variation: &Variation, source: &Image) -> Result<Finished, JobError> {
        if let Some(model) = self.variation_model(variation).await?
            && self.backends.served_models().contains(&model)
        {
            // The model's backends do not do this transform (`variations` of `[[backends]]`).
            tracing::info!(variation.id = %variation.id, transform = variation.transform.name(), "no backend of the image's model does this variation; it runs on the built-in renderer");
        }
        let source_key = variation.source_key.as_deref().unwrap_or(&source.storage_key);
        let outcome = match self.images.get(source_key).await? {
            None => JobOutcome::Failed { reason: "the source image no longer exists".into() },
            Some(bytes) => match self.renderer.transform(bytes, &variation.transform).await {
                Ok(file) => {
                    let key = images::variation_image_key(
                        variation.user_id,
                        variation.generation_id,
                        variation.id,
                        variation.transform.extension(),
                    );
                    self.images.put(&key, file).await?;
                    JobOutcome::Complete(key)
                }
                Err(e) => JobOutcome::Failed { reason: e.to_string() },
            },
        };
        self.finish_variation(variation, outcome).await
    }

    async fn finish_variation(&self, variation: &Variation, outcome: JobOutcome<String>) -> Result<Finished, JobError> {
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

/// How a job on a backend went.
enum BackendRun {
    /// The images, as JPEG, and the seed the backend reports for the first.
    Images(Vec<RenderedImage>, Option<u64>),
    /// The generation fails with this reason.
    Failed(String),
    /// Nothing more to record (deleted meanwhile, or given back for another backend).
    Done(Finished),
}

/// The weight of image prompts when `imagePromptWeight` is not given (as on the built-in renderer).
const DEFAULT_IMAGE_PROMPT_WEIGHT: f64 = 0.5;

/// sd-webui-controlnet's `control_mode` for Leonardo's `strengthType`: the weaker two leave the
/// prompt in charge, the stronger three the control picture.
fn control_mode(strength_type: Option<&str>) -> &'static str {
    match strength_type {
        Some("Low") => "My prompt is more important",
        Some("High" | "Ultra" | "Max") => "ControlNet is more important",
        _ => "Balanced",
    }
}

/// A backend's pictures as the JPEG files Easel serves, on a blocking thread.
async fn convert_images(
    images: Vec<BackendImage>,
    expected: u32,
    backend: &str,
) -> Result<(Vec<RenderedImage>, Option<u64>), String> {
    if images.len() < expected as usize {
        return Err(format!("{backend} returned {} of the {expected} images asked for", images.len()));
    }
    let seed = images.first().and_then(|image| image.seed);
    let backend = backend.to_string();
    tokio::task::spawn_blocking(move || {
        images
            .iter()
            .map(|image| super::to_jpeg(&image.bytes).map_err(|e| format!("{backend} returned an unusable image: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(|images| (images, seed))
    })
    .await
    .map_err(|e| format!("converting the images failed: {e}"))?
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

/// The prompt a backend gets: the user's, then `<lora:NAME:WEIGHT>` per applied element (the
/// syntax AUTOMATIC1111 and stable-diffusion.cpp read; models on other kinds refuse elements).
fn prompt_with_loras(params: &crate::generation::GenerationParams) -> String {
    let mut prompt = params.prompt.clone();
    for applied in &params.elements {
        prompt.push_str(&format!(" <lora:{}:{}>", applied.lora(), applied.weight));
    }
    prompt
}
