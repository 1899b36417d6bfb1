//! AUTOMATIC1111's API (`/sdapi/v1/...`), also spoken by Forge, SD.Next and stable-diffusion.cpp's
//! `sd-server`: `txt2img` and `img2img` take the parameters as JSON and answer with base64 images
//! and an `info` JSON string that holds the seeds used (stable-diffusion.cpp leaves it empty and
//! writes the seed into each PNG's `parameters` text instead). `interrupt` stops the running job
//! (stable-diffusion.cpp has none: a cancelled job runs to its end there).

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{
    Adapter, BackendError, BackendImage, BackendJob, Http, Scheduler, decode_base64_image, encode_base64,
    png_parameters_seed,
};

pub struct Sdapi {
    http: Http,
}

impl Sdapi {
    pub fn new(http: Http) -> Sdapi {
        Sdapi { http }
    }
}

/// The sampler names of AUTOMATIC1111 (and the servers that copy its API).
fn sampler_name(scheduler: Scheduler) -> Option<&'static str> {
    Some(match scheduler {
        Scheduler::Klms => "LMS",
        Scheduler::EulerAncestral => "Euler a",
        Scheduler::Euler => "Euler",
        Scheduler::Ddim => "DDIM",
        Scheduler::DpmSolver => "DPM++ 2M",
        Scheduler::Pndm => "PLMS",
        Scheduler::Default => return None,
    })
}

/// The request body of `txt2img` (or `img2img` when the job has an init image).
pub fn request_body(job: &BackendJob) -> Value {
    let mut body = json!({
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "width": job.width,
        "height": job.height,
        "steps": job.steps,
        "cfg_scale": job.guidance,
        "seed": job.seed,
        "batch_size": job.num_images,
        "n_iter": 1,
        "send_images": true,
        "save_images": false,
    });
    if let Some(sampler) = sampler_name(Scheduler::of(&job.scheduler)) {
        body["sampler_name"] = json!(sampler);
    }
    if let Some(model) = &job.model {
        body["override_settings"] = json!({ "sd_model_checkpoint": model });
        body["override_settings_restore_afterwards"] = json!(false);
    }
    if let Some(init) = &job.init_image {
        body["init_images"] = json!([encode_base64(init)]);
        body["denoising_strength"] = json!(job.denoising_strength());
    }
    if let Some(mask) = &job.mask {
        // Repaint the white part, starting from the picture that is there ("original").
        body["mask"] = json!(encode_base64(mask));
        body["inpainting_fill"] = json!(1);
        body["mask_blur"] = json!(4);
        body["inpaint_full_res"] = json!(false);
    }
    body
}

/// The images and seeds of a `txt2img` / `img2img` answer.
pub fn parse_answer(http: &Http, answer: &Value, job: &BackendJob) -> Result<Vec<BackendImage>, BackendError> {
    let images = answer["images"].as_array().ok_or_else(|| http.malformed("no `images` list"))?;
    // `info` is a JSON document inside a string: `seed` and `all_seeds` are the seeds used.
    let info: Value = match &answer["info"] {
        Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        other => other.clone(),
    };
    let seeds: Vec<Option<u64>> = match info["all_seeds"].as_array() {
        Some(all) => all.iter().map(Value::as_u64).collect(),
        None => vec![info["seed"].as_u64()],
    };
    let mut out = Vec::with_capacity(images.len());
    // A1111 appends grids and extra images (ControlNet maps) after the batch: keep the batch.
    for (index, image) in images.iter().take(job.num_images as usize).enumerate() {
        let text = image.as_str().ok_or_else(|| http.malformed("an image that is not a base64 string"))?;
        let bytes = decode_base64_image(text).ok_or_else(|| http.malformed("an image that is not valid base64"))?;
        // A1111 reports seeds in `info`; stable-diffusion.cpp only in each PNG's parameters.
        let seed = seeds
            .get(index)
            .copied()
            .flatten()
            .or_else(|| seeds.first().copied().flatten().map(|s| s + index as u64))
            .or_else(|| png_parameters_seed(&bytes));
        out.push(BackendImage { bytes, seed });
    }
    Ok(out)
}

#[async_trait]
impl Adapter for Sdapi {
    async fn health(&self) -> Result<(), BackendError> {
        self.http.send_json(self.http.get("sdapi/v1/samplers")).await.map(drop)
    }

    async fn generate(&self, job: &BackendJob) -> Result<Vec<BackendImage>, BackendError> {
        let path = if job.init_image.is_some() { "sdapi/v1/img2img" } else { "sdapi/v1/txt2img" };
        let answer = self.http.send_json(self.http.post(path).json(&request_body(job))).await?;
        parse_answer(&self.http, &answer, job)
    }

    async fn cancel(&self, _job: &BackendJob) {
        if let Err(e) = self.http.send(self.http.post("sdapi/v1/interrupt")).await {
            tracing::warn!(backend = self.http.name, error.message = %e, "cannot interrupt the job on the server");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> BackendJob {
        BackendJob {
            id: "g".into(),
            model: Some("sd_xl_base_1.0.safetensors".into()),
            prompt: "a cat".into(),
            negative_prompt: "blurry".into(),
            width: 64,
            height: 128,
            num_images: 2,
            seed: 7,
            steps: 12,
            guidance: 6.5,
            scheduler: "EULER_ANCESTRAL_DISCRETE".into(),
            init_image: None,
            init_strength: None,
            mask: None,
        }
    }

    #[test]
    fn leonardos_parameters_map_to_automatic1111s() {
        let body = request_body(&job());
        assert_eq!(body["width"], 64);
        assert_eq!(body["height"], 128);
        assert_eq!(body["batch_size"], 2);
        assert_eq!(body["cfg_scale"], 6.5);
        assert_eq!(body["sampler_name"], "Euler a");
        assert_eq!(body["override_settings"]["sd_model_checkpoint"], "sd_xl_base_1.0.safetensors");
        assert!(body.get("init_images").is_none());
        let img2img = request_body(&BackendJob {
            init_image: Some(bytes::Bytes::from_static(b"jpeg")),
            init_strength: Some(0.7),
            ..job()
        });
        assert_eq!(img2img["init_images"][0], "anBlZw==");
        assert!((img2img["denoising_strength"].as_f64().unwrap() - 0.3).abs() < 1e-9);
    }
}
