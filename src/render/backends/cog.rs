//! A Cog predictor's HTTP API (`cog` from PyPI, or any Cog container): `PUT /predictions/{id}`
//! with the inputs Replicate's Stable Diffusion predictors take (`prompt`, `negative_prompt`,
//! `width`, `height`, `num_outputs`, `seed`, `num_inference_steps`, `guidance_scale`,
//! `scheduler`, `image` and `prompt_strength`), answered when the prediction ends.
//!
//! Easel names each prediction after the job, so a cancel (`POST /predictions/{id}/cancel`)
//! reaches the right one. Outputs come back as `data:` URIs, or as URLs when the server was
//! started with `--upload-url` (they are then downloaded). The seed used is read from
//! `metrics.seed`, else from a `Using seed: N` log line, as Replicate's predictors print it.
//! A predictor runs one prediction at a time and answers 409 while busy, also for a moment after
//! a prediction ends: that is retried briefly.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Adapter, BackendError, BackendImage, BackendJob, Http, Scheduler, decode_base64_image, encode_base64};

/// How long a 409 (the predictor is busy) is retried before the server counts as unavailable.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(3);

pub struct Cog {
    http: Http,
}

impl Cog {
    pub fn new(http: Http) -> Cog {
        Cog { http }
    }

    fn prediction_path(job: &BackendJob) -> String {
        format!("predictions/{}", prediction_id(job))
    }

    async fn output(&self, item: &Value) -> Result<Bytes, BackendError> {
        let text = item.as_str().ok_or_else(|| self.http.malformed("an output that is not a file"))?;
        if text.starts_with("data:") {
            return decode_base64_image(text).ok_or_else(|| self.http.malformed("an output that is not valid base64"));
        }
        let url = self.http.base.join(text).map_err(|_| self.http.malformed(format!("output URL {text:?}")))?;
        self.http.send(self.http.client.get(url)).await
    }
}

/// The prediction's id on the server: the job's, which stays the same across Easel's retries.
fn prediction_id(job: &BackendJob) -> String {
    format!("easel-{}", job.id)
}

/// Replicate's scheduler names.
fn scheduler_name(scheduler: Scheduler) -> Option<&'static str> {
    Some(match scheduler {
        Scheduler::Klms => "KLMS",
        Scheduler::EulerAncestral => "K_EULER_ANCESTRAL",
        Scheduler::Euler => "K_EULER",
        Scheduler::Ddim => "DDIM",
        Scheduler::DpmSolver => "DPMSolverMultistep",
        Scheduler::Pndm => "PNDM",
        Scheduler::Default => return None,
    })
}

/// The prediction request for `job`. Optional inputs are left out rather than sent as `null`
/// (Cog refuses `null`), and inputs a predictor does not declare are ignored by Cog.
pub fn request_body(job: &BackendJob) -> Value {
    let mut input = json!({
        "prompt": job.prompt,
        "width": job.width,
        "height": job.height,
        "num_outputs": job.num_images,
        "seed": job.seed,
        "num_inference_steps": job.steps,
        "guidance_scale": job.guidance,
    });
    if !job.negative_prompt.is_empty() {
        input["negative_prompt"] = json!(job.negative_prompt);
    }
    if let Some(name) = scheduler_name(Scheduler::of(&job.scheduler)) {
        input["scheduler"] = json!(name);
    }
    if let Some(init) = &job.init_image {
        input["image"] = json!(format!("data:image/jpeg;base64,{}", encode_base64(init)));
        input["prompt_strength"] = json!(job.denoising_strength());
    }
    json!({ "id": prediction_id(job), "input": input })
}

/// The seed a prediction reports: `metrics.seed`, else a `Using seed: N` log line.
fn reported_seed(prediction: &Value) -> Option<u64> {
    prediction["metrics"]["seed"].as_u64().or_else(|| {
        prediction["logs"].as_str()?.lines().find_map(|line| {
            let rest = line.trim().strip_prefix("Using seed:")?;
            rest.trim().parse().ok()
        })
    })
}

/// A predictor's error in words: Cog prefixes `Prediction failed: ` (sometimes twice).
fn prediction_error(prediction: &Value) -> String {
    let mut text = prediction["error"].as_str().unwrap_or("no error message").trim();
    while let Some(rest) = text.strip_prefix("Prediction failed:") {
        text = rest.trim();
    }
    super::shorten(text, 300)
}

#[async_trait]
impl Adapter for Cog {
    async fn health(&self) -> Result<(), BackendError> {
        let health = self.http.send_json(self.http.get("health-check")).await?;
        match health["status"].as_str() {
            Some("READY" | "BUSY") => Ok(()),
            Some(status) => {
                Err(BackendError::Unavailable(format!("{} reports its status as {status}", self.http.name)))
            }
            None => Err(self.http.malformed("a health check without `status`")),
        }
    }

    async fn generate(&self, job: &BackendJob) -> Result<Vec<BackendImage>, BackendError> {
        let body = request_body(job);
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        let prediction = loop {
            let request = self.http.client.put(self.http.url(&Self::prediction_path(job))).json(&body);
            let (status, answer) = self.http.fetch(request).await?;
            if status.as_u16() == 409 {
                if started.elapsed() < BUSY_RETRY_FOR {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                    continue;
                }
                return Err(BackendError::Unavailable(format!(
                    "{} is busy with another prediction (409: {})",
                    self.http.name,
                    super::error_message(&answer)
                )));
            }
            // A 503 is a predictor whose setup has not finished (or failed).
            let answer = self.http.judge(status, answer)?;
            break serde_json::from_slice::<Value>(&answer)
                .map_err(|_| self.http.malformed("a prediction that is not JSON"))?;
        };
        match prediction["status"].as_str() {
            Some("succeeded") => {}
            Some("failed") => {
                return Err(BackendError::Failed(format!(
                    "the predictor on {} failed: {}",
                    self.http.name,
                    prediction_error(&prediction)
                )));
            }
            Some("canceled") => {
                return Err(BackendError::Failed(format!("the prediction was cancelled on {}", self.http.name)));
            }
            other => return Err(self.http.malformed(format!("a prediction with status {other:?}"))),
        }
        let outputs: Vec<Value> = match &prediction["output"] {
            Value::Array(items) => items.clone(),
            Value::String(_) => vec![prediction["output"].clone()],
            _ => return Err(self.http.malformed("a prediction without output files")),
        };
        let seed = reported_seed(&prediction);
        let mut images = Vec::with_capacity(outputs.len());
        for (index, item) in outputs.iter().take(job.num_images as usize).enumerate() {
            images.push(BackendImage { bytes: self.output(item).await?, seed: seed.map(|s| s + index as u64) });
        }
        Ok(images)
    }

    async fn cancel(&self, job: &BackendJob) {
        let path = format!("{}/cancel", Self::prediction_path(job));
        let result = match self.http.fetch(self.http.post(&path)).await {
            // 404: not running there (finished, or never started).
            Ok((status, _)) if status.as_u16() == 404 => Ok(()),
            Ok((status, body)) => self.http.judge(status, body).map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(backend = self.http.name, error.message = %e, "cannot cancel the prediction");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_come_from_metrics_or_the_log() {
        assert_eq!(reported_seed(&json!({"metrics": {"seed": 7}, "logs": "Using seed: 9"})), Some(7));
        assert_eq!(reported_seed(&json!({"logs": "loading\nUsing seed: 9\n"})), Some(9));
        assert_eq!(reported_seed(&json!({"logs": ""})), None);
    }

    #[test]
    fn prediction_errors_lose_cogs_prefixes() {
        let failed = json!({"error": "Prediction failed: Prediction failed: RuntimeError: out of memory"});
        assert_eq!(prediction_error(&failed), "RuntimeError: out of memory");
    }
}
