//! Image generation backends and the workers that run render jobs.
//!
//! A [`Renderer`] turns validated generation parameters into JPEG files; the workers in
//! [`worker`] claim jobs from the store, call the renderer, store the files and record the outcome.
//! The built-in renderer ([`builtin`]) needs no GPU and is deterministic.

pub mod backends;
pub mod builtin;
pub mod dispatch;
pub mod guides;
pub mod handoff;
pub mod transform;
pub mod worker;

use async_trait::async_trait;
use bytes::Bytes;

use crate::generation::GenerationParams;
use crate::records::Transform;

/// What a renderer needs for one generation.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub params: GenerationParams,
    /// The image of `init_generation_image_id` or `init_image_id` (JPEG), for image-to-image.
    pub init_image: Option<Bytes>,
    /// The pictures of a canvas request, controlnets and image prompts (built-in renderer only).
    pub guides: Guides,
}

/// The pictures that guide a generation besides its init image, as stored (PNG, JPEG or WebP).
#[derive(Clone, Debug, Default)]
pub struct Guides {
    /// The canvas picture and its mask (`canvasInitId`, `canvasMaskId`).
    pub canvas: Option<(Bytes, Option<Bytes>)>,
    /// Each controlnet's picture and weight.
    pub controls: Vec<(Bytes, f64)>,
    /// The image prompts' pictures.
    pub image_prompts: Vec<Bytes>,
}

/// One encoded image.
#[derive(Clone, Debug)]
pub struct RenderedImage {
    pub jpeg: Bytes,
    pub width: u32,
    pub height: u32,
}

/// Why a render failed; recorded as the generation's failure reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

#[async_trait]
pub trait Renderer: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Renders `params.num_images` images of `params.width` x `params.height`.
    async fn generate(&self, request: GenerateRequest) -> Result<Vec<RenderedImage>, RenderError>;
    /// `transform` applied to `source` (a JPEG or PNG file Easel stored): a file in the format
    /// of [`Transform::extension`].
    async fn transform(&self, source: Bytes, transform: &Transform) -> Result<Bytes, RenderError>;
}

/// Any PNG, JPEG or WebP picture as the JPEG Easel stores (backends send PNG mostly).
pub fn to_jpeg(bytes: &[u8]) -> Result<RenderedImage, RenderError> {
    let picture =
        image::load_from_memory(bytes).map_err(|e| RenderError(format!("it cannot be decoded: {e}")))?.to_rgb8();
    let (width, height) = picture.dimensions();
    Ok(RenderedImage { jpeg: builtin::encode_jpeg(&picture)?, width, height })
}
