//! AUTOMATIC1111's API (`/sdapi/v1/...`), also spoken by Forge, SD.Next and stable-diffusion.cpp's
//! `sd-server`: `txt2img` and `img2img` take the parameters as JSON and answer with base64 images
//! and an `info` JSON string that holds the seeds used (stable-diffusion.cpp leaves it empty and
//! writes the seed into each PNG's `parameters` text instead). `interrupt` stops the running job
//! (stable-diffusion.cpp has none: a cancelled job runs to its end there).
//!
//! Controlnets and image prompts go to the sd-webui-controlnet extension as units in
//! `alwayson_scripts.controlnet.args`. Variations: upscales through `extra-single-image`, unzoom
//! as an outpaint (`img2img` of the picture shrunk into its surroundings, with a mask around it),
//! background removal through the rembg extension's `/rembg`.

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{
    Adapter, BackendError, BackendImage, BackendJob, Http, Scheduler, TransformJob, decode_base64_image, encode_base64,
    png_parameters_seed,
};
use crate::records::Transform;

pub struct Sdapi {
    http: Http,
    /// `upscaler_1` of `extra-single-image`.
    upscaler: String,
    /// The rembg extension's model.
    rembg_model: String,
}

impl Sdapi {
    pub fn new(http: Http, upscaler: String, rembg_model: String) -> Sdapi {
        Sdapi { http, upscaler, rembg_model }
    }

    /// Sends a request to an endpoint that only some servers of the kind offer (an extension's,
    /// or one stable-diffusion.cpp lacks): a 404 or 405 there fails the job with what is missing,
    /// rather than taking the server out of the rotation.
    async fn optional_endpoint(&self, path: &str, body: &Value, what: &str) -> Result<Value, BackendError> {
        let (status, answer) = self.http.fetch(self.http.post(path).json(body)).await?;
        if matches!(status.as_u16(), 404 | 405) {
            return Err(BackendError::Failed(format!("{} does not offer /{path} ({what})", self.http.name)));
        }
        self.http.parse_json(&self.http.judge(status, answer)?)
    }

    /// The picture of an answer's `image` field (`extra-single-image`, `/rembg`).
    fn image_field(&self, answer: &Value) -> Result<BackendImage, BackendError> {
        let text = answer["image"].as_str().ok_or_else(|| self.http.malformed("no `image`"))?;
        let bytes =
            decode_base64_image(text).ok_or_else(|| self.http.malformed("an image that is not valid base64"))?;
        Ok(BackendImage { bytes, seed: None })
    }
}

/// The body of `extra-single-image`: `source` upscaled `factor` times by `upscaler`.
pub fn upscale_body(source: &Bytes, factor: f64, upscaler: &str) -> Value {
    json!({
        "image": encode_base64(source),
        "resize_mode": 0,
        "upscaling_resize": factor,
        "upscaler_1": upscaler,
        "upscaler_2": "None",
        "extras_upscaler_2_visibility": 0,
        "gfpgan_visibility": 0,
        "codeformer_visibility": 0,
        "show_extras_results": true,
    })
}

/// The body of the rembg extension's `/rembg`: `source` with its background removed.
pub fn rembg_body(source: &Bytes, model: &str) -> Value {
    json!({
        "input_image": encode_base64(source),
        "model": model,
        "return_mask": false,
        "alpha_matting": false,
    })
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
    if !job.controls.is_empty() {
        let units: Vec<Value> = job
            .controls
            .iter()
            .map(|unit| {
                json!({
                    "enabled": true,
                    "image": encode_base64(&unit.image),
                    "module": unit.module,
                    "model": unit.model,
                    "weight": unit.weight,
                    "guidance_start": 0.0,
                    "guidance_end": 1.0,
                    "control_mode": unit.control_mode,
                    "resize_mode": "Crop and Resize",
                    "pixel_perfect": true,
                })
            })
            .collect();
        body["alwayson_scripts"] = json!({ "controlnet": { "args": units } });
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

    async fn transform(&self, job: &TransformJob) -> Result<BackendImage, BackendError> {
        let factor = match &job.transform {
            Transform::Upscale => 2.0,
            Transform::UniversalUpscale(settings) => settings.multiplier,
            Transform::NoBackground => {
                let body = rembg_body(&job.source, &self.rembg_model);
                let answer = self.optional_endpoint("rembg", &body, "the rembg extension").await?;
                return self.image_field(&answer);
            }
            Transform::Unzoom => {
                let (init, mask, width, height) = crate::render::transform::unzoom_outpaint(&job.source)
                    .map_err(|e| BackendError::Failed(e.to_string()))?;
                let outpaint = BackendJob {
                    width,
                    height,
                    num_images: 1,
                    init_image: Some(init),
                    mask: Some(mask),
                    // Repaint the surroundings freely; the mask keeps the picture.
                    init_strength: Some(super::UNZOOM_KEEP),
                    controls: Vec::new(),
                    ..job.generation.clone()
                };
                let answer =
                    self.http.send_json(self.http.post("sdapi/v1/img2img").json(&request_body(&outpaint))).await?;
                let mut images = parse_answer(&self.http, &answer, &outpaint)?;
                return match images.is_empty() {
                    true => Err(self.http.malformed("no image in `images`")),
                    false => Ok(images.swap_remove(0)),
                };
            }
        };
        let body = upscale_body(&job.source, factor, &self.upscaler);
        let answer = self.optional_endpoint("sdapi/v1/extra-single-image", &body, "upscales").await?;
        self.image_field(&answer)
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
            controls: Vec::new(),
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
