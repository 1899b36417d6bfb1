//! OpenAI's image API (`/v1/images/generations`, and `/v1/images/edits` for image-to-image), as
//! stable-diffusion.cpp's server, LocalAI and hosted services speak it: `n` images of `size`,
//! returned as `b64_json` or as a `url` that is then downloaded. The API has no seed, step or
//! negative prompt fields; Easel sends only what it defines, so hosted services accept the
//! request, and with `sd_cpp_extra_args` passes them in stable-diffusion.cpp's prompt extension.
//! The seed used is read from the PNG's parameters where the server writes them.
//!
//! Unzoom variations are an edit too: the picture shrunk into its surroundings, with a mask that
//! is transparent (OpenAI's "paint here") around it.

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{
    Adapter, BackendError, BackendImage, BackendJob, Http, TransformJob, decode_base64_image, png_parameters_seed,
};
use crate::records::Transform;

pub struct OpenAi {
    http: Http,
    /// stable-diffusion.cpp's prompt extension for the parameters OpenAI's API lacks.
    sd_cpp_extra_args: bool,
}

impl OpenAi {
    pub fn new(http: Http, sd_cpp_extra_args: bool) -> OpenAi {
        OpenAi { http, sd_cpp_extra_args }
    }

    /// The prompt, with stable-diffusion.cpp's `<sd_cpp_extra_args>` tag where the server takes it.
    fn prompt(&self, job: &BackendJob) -> String {
        if !self.sd_cpp_extra_args {
            return job.prompt.clone();
        }
        let mut extra = json!({
            "seed": job.seed,
            "negative_prompt": job.negative_prompt,
            "sample_params": {"sample_steps": job.steps, "guidance": {"txt_cfg": job.guidance}},
        });
        if job.init_image.is_some() {
            extra["strength"] = json!(job.denoising_strength());
        }
        format!("{}<sd_cpp_extra_args>{extra}</sd_cpp_extra_args>", job.prompt)
    }

    async fn images(&self, answer: &Value, job: &BackendJob) -> Result<Vec<BackendImage>, BackendError> {
        let data = answer["data"].as_array().ok_or_else(|| self.http.malformed("no `data` list"))?;
        let mut images = Vec::with_capacity(data.len());
        for item in data.iter().take(job.num_images as usize) {
            let bytes = if let Some(b64) = item["b64_json"].as_str() {
                decode_base64_image(b64).ok_or_else(|| self.http.malformed("`b64_json` that is not valid base64"))?
            } else if let Some(url) = item["url"].as_str() {
                self.download(url).await?
            } else {
                return Err(self.http.malformed("an image with neither `b64_json` nor `url`"));
            };
            let seed = png_parameters_seed(&bytes);
            images.push(BackendImage { bytes, seed });
        }
        Ok(images)
    }

    /// `POST /v1/images/edits` of `image` (a file named `file_name` of type `mime`), with `mask`
    /// (PNG, transparent where to paint) if given.
    async fn edit(
        &self,
        job: &BackendJob,
        image: Bytes,
        file_name: &'static str,
        mime: &str,
        mask: Option<Bytes>,
    ) -> Result<Value, BackendError> {
        let image = reqwest::multipart::Part::bytes(image.to_vec())
            .file_name(file_name)
            .mime_str(mime)
            .expect("a valid MIME type");
        let mut form = reqwest::multipart::Form::new()
            .part("image", image)
            .text("prompt", self.prompt(job))
            .text("n", job.num_images.to_string())
            .text("size", format!("{}x{}", job.width, job.height))
            .text("response_format", "b64_json");
        if let Some(mask) = mask {
            let mask = reqwest::multipart::Part::bytes(mask.to_vec())
                .file_name("mask.png")
                .mime_str("image/png")
                .expect("a valid MIME type");
            form = form.part("mask", mask);
        }
        if let Some(model) = &job.model {
            form = form.text("model", model.clone());
        }
        let (status, body) = self.http.fetch(self.http.post("v1/images/edits").multipart(form)).await?;
        if matches!(status.as_u16(), 404 | 405) {
            return Err(BackendError::Failed(format!(
                "{} does not offer image edits (/v1/images/edits), so it cannot do image-to-image or unzoom",
                self.http.name
            )));
        }
        self.http.parse_json(&self.http.judge(status, body)?)
    }

    async fn download(&self, url: &str) -> Result<Bytes, BackendError> {
        let url = self.http.base.join(url).map_err(|_| self.http.malformed(format!("image URL {url:?}")))?;
        self.http.send(self.http.client.get(url)).await
    }
}

/// The JSON body of `/v1/images/generations`.
pub fn generation_body(job: &BackendJob, prompt: String) -> Value {
    let mut body = json!({
        "prompt": prompt,
        "n": job.num_images,
        "size": format!("{}x{}", job.width, job.height),
        "response_format": "b64_json",
    });
    if let Some(model) = &job.model {
        body["model"] = json!(model);
    }
    body
}

#[async_trait]
impl Adapter for OpenAi {
    async fn health(&self) -> Result<(), BackendError> {
        self.http.send_json(self.http.get("v1/models")).await.map(drop)
    }

    async fn generate(&self, job: &BackendJob) -> Result<Vec<BackendImage>, BackendError> {
        let answer = match &job.init_image {
            None => {
                self.http
                    .send_json(self.http.post("v1/images/generations").json(&generation_body(job, self.prompt(job))))
                    .await?
            }
            Some(init) => self.edit(job, init.clone(), "init.jpg", "image/jpeg", None).await?,
        };
        self.images(&answer, job).await
    }

    async fn transform(&self, job: &TransformJob) -> Result<BackendImage, BackendError> {
        if job.transform != Transform::Unzoom {
            return Err(BackendError::Failed(format!(
                "{} (openai) does not do {} variations",
                self.http.name,
                job.transform.name()
            )));
        }
        let (init, mask, width, height) =
            crate::render::transform::unzoom_outpaint(&job.source).map_err(|e| BackendError::Failed(e.to_string()))?;
        let mask = crate::render::transform::transparent_where_white(&mask).map_err(|e| BackendError::Failed(e.0))?;
        let edit = BackendJob {
            width,
            height,
            num_images: 1,
            init_image: Some(init.clone()),
            init_strength: Some(super::UNZOOM_KEEP),
            ..job.generation.clone()
        };
        let answer = self.edit(&edit, init, "unzoom.png", "image/png", Some(mask)).await?;
        let mut images = self.images(&answer, &edit).await?;
        match images.is_empty() {
            true => Err(self.http.malformed("no image in `data`")),
            false => Ok(images.swap_remove(0)),
        }
    }

    async fn cancel(&self, _job: &BackendJob) {
        // The API has no cancel: dropping the request is all a client can do.
    }
}
