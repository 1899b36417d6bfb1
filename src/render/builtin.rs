//! The built-in renderer: draws an abstract picture determined entirely by the prompt, negative
//! prompt, seed, model, size and style. The same inputs give the same bytes; different prompts
//! give visibly different pictures (each prompt word places its own shape). No GPU, no model files.
//!
//! Pictures are painted on a blocking thread; `workers` bounds how many are painted at once.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use image::imageops::FilterType;
use image::{ImageFormat, RgbImage};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{GenerateRequest, RenderError, RenderedImage, Renderer};
use crate::generation::GenerationParams;
use crate::records::Transform;

const JPEG_QUALITY: u8 = 88;

pub struct BuiltinRenderer {
    cpu: Arc<Semaphore>,
}

impl BuiltinRenderer {
    pub fn new(workers: usize) -> BuiltinRenderer {
        BuiltinRenderer { cpu: Arc::new(Semaphore::new(workers.max(1))) }
    }

    async fn on_cpu<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, RenderError> + Send + 'static,
    ) -> Result<T, RenderError> {
        let _permit = self.cpu.acquire().await.map_err(|_| RenderError("renderer is shutting down".into()))?;
        tokio::task::spawn_blocking(work).await.map_err(|e| RenderError(format!("render task failed: {e}")))?
    }
}

#[async_trait]
impl Renderer for BuiltinRenderer {
    fn name(&self) -> &'static str {
        "builtin"
    }

    async fn generate(&self, request: GenerateRequest) -> Result<Vec<RenderedImage>, RenderError> {
        let request = Arc::new(request);
        // The guiding pictures are decoded in the first image's job (not one of their own: a
        // generation without any would pay a hop to the blocking pool for nothing), then shared.
        let mut decoded: Option<Arc<Decoded>> = None;
        let mut images = Vec::with_capacity(request.params.num_images as usize);
        for index in 0..request.params.num_images {
            let (request, known) = (request.clone(), decoded.clone());
            let (image, shared) = self
                .on_cpu(move || {
                    let decoded = match known {
                        Some(decoded) => decoded,
                        None => Arc::new(Decoded::new(&request)?),
                    };
                    Ok((render_one(&request, &decoded, index)?, decoded))
                })
                .await?;
            decoded = Some(shared);
            images.push(image);
        }
        Ok(images)
    }

    async fn transform(&self, source: Bytes, transform: &Transform) -> Result<Bytes, RenderError> {
        let transform = transform.clone();
        self.on_cpu(move || super::transform::apply(&source, &transform)).await
    }
}

/// The pictures that guide a generation (its init image and guides), decoded and sized once for
/// all its images.
pub struct Decoded {
    init: Option<RgbImage>,
    guides: super::guides::DecodedGuides,
}

impl Decoded {
    pub fn new(request: &GenerateRequest) -> Result<Decoded, RenderError> {
        let (width, height) = (request.params.width, request.params.height);
        let init = request
            .init_image
            .as_ref()
            .map(|init| {
                let init = image::load_from_memory_with_format(init, ImageFormat::Jpeg)
                    .map_err(|e| RenderError(format!("the init image cannot be decoded: {e}")))?
                    .to_rgb8();
                Ok(image::imageops::resize(&init, width, height, FilterType::Triangle))
            })
            .transpose()?;
        let guides = super::guides::DecodedGuides::new(&request.params, &request.guides, width, height)?;
        Ok(Decoded { init, guides })
    }
}

/// Renders image `index` of a generation to JPEG, with its guiding pictures `decoded`.
pub fn render_one(request: &GenerateRequest, decoded: &Decoded, index: u32) -> Result<RenderedImage, RenderError> {
    let params = &request.params;
    // Elements add their names' shapes, as prompt words do.
    let mut picture = if params.elements.is_empty() {
        paint(params, index)
    } else {
        let mut with_elements = params.clone();
        for applied in &params.elements {
            with_elements.prompt.push(' ');
            with_elements.prompt.push_str(&applied.element.name);
        }
        paint(&with_elements, index)
    };
    if let Some(init) = &decoded.init {
        blend_init_image(&mut picture, init, params.init_strength.unwrap_or(0.5));
    }
    super::guides::apply(&mut picture, params, &decoded.guides);
    Ok(RenderedImage { jpeg: encode_jpeg(&picture)?, width: params.width, height: params.height })
}

pub(super) fn encode_jpeg(picture: &RgbImage) -> Result<Bytes, RenderError> {
    let (Ok(width), Ok(height)) = (u16::try_from(picture.width()), u16::try_from(picture.height())) else {
        return Err(RenderError(format!("{}x{} is too large for a JPEG", picture.width(), picture.height())));
    };
    let mut jpeg = Vec::with_capacity((picture.width() * picture.height() / 4) as usize);
    jpeg_encoder::Encoder::new(&mut jpeg, JPEG_QUALITY)
        .encode(picture.as_raw(), width, height, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| RenderError(format!("JPEG encoding failed: {e}")))?;
    Ok(Bytes::from(jpeg))
}

/// Blends `init` (sized to `picture`) into `picture`, keeping `strength` of it.
fn blend_init_image(picture: &mut RgbImage, init: &RgbImage, strength: f64) {
    let keep = strength.clamp(0.0, 1.0) as f32;
    for (out, base) in picture.pixels_mut().zip(init.pixels()) {
        for channel in 0..3 {
            out[channel] = (f32::from(base[channel]) * keep + f32::from(out[channel]) * (1.0 - keep)) as u8;
        }
    }
}

/// A small deterministic generator (SplitMix64) so pictures never depend on a library's choice
/// of random algorithm (the variations and the prompt tools use it too).
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0.0..1.0`.
    pub(crate) fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn seed_of(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    u64::from_le_bytes(hasher.finalize()[..8].try_into().expect("32-byte digest"))
}

/// HSV (all in 0..1) to RGB.
fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h = (h.fract() + 1.0).fract() * 6.0;
    let c = v * s;
    let x = c * (1.0 - ((h % 2.0) - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [(r + m) * 255.0, (g + m) * 255.0, (b + m) * 255.0]
}

/// Paints the picture: a two-colour gradient chosen by the whole request, then one soft shape per
/// prompt word (placed by the word and the seed), then the negative prompt's words darken their own
/// regions.
fn paint(params: &GenerationParams, index: u32) -> RgbImage {
    let (width, height) = (params.width, params.height);
    let style = params.preset_style.as_deref().unwrap_or("");
    let seed_bytes = params.seed.to_le_bytes();
    let index_bytes = index.to_le_bytes();
    let size_bytes = [width.to_le_bytes(), height.to_le_bytes()].concat();
    let mut scene = SplitMix(seed_of(&[
        params.prompt.as_bytes(),
        params.negative_prompt.as_bytes(),
        &seed_bytes,
        &index_bytes,
        params.model_id.as_bytes(),
        &size_bytes,
        style.as_bytes(),
    ]));

    let base_hue = scene.unit();
    let top = hsv(base_hue, 0.55 + 0.4 * scene.unit(), 0.35 + 0.5 * scene.unit());
    let bottom = hsv(base_hue + 0.3 + 0.4 * scene.unit(), 0.5 + 0.5 * scene.unit(), 0.2 + 0.6 * scene.unit());
    let angle = scene.unit() * std::f32::consts::TAU;
    let (dx, dy) = (angle.cos(), angle.sin());

    let (w, h) = (width as f32, height as f32);
    let mut pixels = vec![0f32; (width * height * 3) as usize];
    for y in 0..height {
        for x in 0..width {
            let t = ((x as f32 / w - 0.5) * dx + (y as f32 / h - 0.5) * dy + 0.5).clamp(0.0, 1.0);
            let at = ((y * width + x) * 3) as usize;
            for c in 0..3 {
                pixels[at + c] = top[c] * (1.0 - t) + bottom[c] * t;
            }
        }
    }

    let words: Vec<&str> = params.prompt.split_whitespace().take(48).collect();
    for (position, word) in words.iter().enumerate() {
        let mut shape =
            SplitMix(seed_of(&[word.to_lowercase().as_bytes(), &seed_bytes, &index_bytes]) ^ position as u64);
        let colour = hsv(shape.unit(), 0.45 + 0.55 * shape.unit(), 0.45 + 0.55 * shape.unit());
        let cx = shape.unit() * w;
        let cy = shape.unit() * h;
        let radius = (0.06 + 0.22 * shape.unit()) * w.min(h);
        let squareness = shape.unit();
        let opacity = 0.55 + 0.4 * shape.unit();
        stamp(&mut pixels, width, height, (cx, cy, radius), squareness, colour, opacity);
    }
    for word in params.negative_prompt.split_whitespace().take(16) {
        let mut shape = SplitMix(seed_of(&[b"negative", word.to_lowercase().as_bytes(), &seed_bytes]));
        let (cx, cy) = (shape.unit() * w, shape.unit() * h);
        let radius = (0.1 + 0.2 * shape.unit()) * w.min(h);
        stamp(&mut pixels, width, height, (cx, cy, radius), 0.0, [0.0, 0.0, 0.0], 0.35);
    }

    let bytes: Vec<u8> = pixels.iter().map(|v| v.clamp(0.0, 255.0) as u8).collect();
    RgbImage::from_raw(width, height, bytes).expect("buffer has width * height * 3 bytes")
}

/// Blends a soft-edged shape (a disc at `squareness` 0, a square at 1) into `pixels`.
fn stamp(
    pixels: &mut [f32],
    width: u32,
    height: u32,
    (cx, cy, radius): (f32, f32, f32),
    squareness: f32,
    colour: [f32; 3],
    opacity: f32,
) {
    let x0 = (cx - radius).floor().max(0.0) as u32;
    let x1 = ((cx + radius).ceil() as u32).min(width);
    let y0 = (cy - radius).floor().max(0.0) as u32;
    let y1 = ((cy + radius).ceil() as u32).min(height);
    let feather = (radius * 0.15).max(1.0);
    for y in y0..y1 {
        for x in x0..x1 {
            let (ax, ay) = (((x as f32) - cx).abs(), ((y as f32) - cy).abs());
            let round = (ax * ax + ay * ay).sqrt();
            let square = ax.max(ay);
            let distance = round * (1.0 - squareness) + square * squareness;
            let coverage = ((radius - distance) / feather).clamp(0.0, 1.0) * opacity;
            if coverage > 0.0 {
                let at = ((y * width + x) * 3) as usize;
                for c in 0..3 {
                    pixels[at + c] += (colour[c] - pixels[at + c]) * coverage;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::models::Catalogue;

    fn request(body: serde_json::Value) -> GenerateRequest {
        let params = GenerationParams::parse(&body, &Catalogue::new(&[]).unwrap(), |_| 7).unwrap();
        GenerateRequest { params, init_image: None, guides: Default::default() }
    }

    fn render(request: &GenerateRequest, index: u32) -> RenderedImage {
        render_one(request, &Decoded::new(request).unwrap(), index).unwrap()
    }

    fn decode(jpeg: &[u8]) -> RgbImage {
        image::load_from_memory_with_format(jpeg, ImageFormat::Jpeg).unwrap().to_rgb8()
    }

    /// Mean absolute difference per channel, 0..255.
    fn difference(a: &RgbImage, b: &RgbImage) -> f64 {
        let total: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
        total as f64 / a.as_raw().len() as f64
    }

    #[test]
    fn same_input_same_bytes_and_requested_size() {
        let cat = request(json!({"prompt":"An oil painting of a cat","width":96,"height":64,"num_images":1,"seed":5}));
        let first = render(&cat, 0);
        assert_eq!(first.jpeg, render(&cat, 0).jpeg);
        let picture = decode(&first.jpeg);
        assert_eq!((picture.width(), picture.height()), (96, 64));
    }

    #[test]
    fn prompts_seeds_and_indexes_change_the_picture() {
        let base = json!({"prompt":"An oil painting of a cat","width":128,"height":128,"num_images":2,"seed":5});
        let cat = decode(&render(&request(base.clone()), 0).jpeg);
        let mut dog = base.clone();
        dog["prompt"] = json!("A watercolour of a dog");
        let mut reseeded = base.clone();
        reseeded["seed"] = json!(6);
        let mut negative = base.clone();
        negative["negative_prompt"] = json!("blurry dark");
        for (label, other) in [
            ("prompt", decode(&render(&request(dog), 0).jpeg)),
            ("seed", decode(&render(&request(reseeded), 0).jpeg)),
            ("index", decode(&render(&request(base.clone()), 1).jpeg)),
            ("negative prompt", decode(&render(&request(negative), 0).jpeg)),
        ] {
            assert!(difference(&cat, &other) > 8.0, "{label} barely changed the picture");
        }
    }

    #[test]
    fn background_removal_separates_a_rendered_scene() {
        let body = json!({"prompt":"a red fox in the snow","width":128,"height":128,"num_images":1});
        let source = render(&request(body), 0);
        let png = super::super::transform::apply(&source.jpeg, &Transform::NoBackground).unwrap();
        let picture = image::load_from_memory_with_format(&png, ImageFormat::Png).unwrap().to_rgba8();
        let clear = picture.pixels().filter(|p| p[3] == 0).count() as f32 / (128.0 * 128.0);
        let opaque = picture.pixels().filter(|p| p[3] == 255).count() as f32 / (128.0 * 128.0);
        assert!(clear > 0.1 && opaque > 0.1, "transparent {clear}, opaque {opaque}");
    }

    #[test]
    fn an_init_image_decoded_once_pulls_every_image_toward_it() {
        let body = json!({"prompt":"a lighthouse","width":64,"height":64,"num_images":2,"seed":3});
        let mut plain = request(body);
        plain.params.init_strength = Some(0.8);
        let init = RgbImage::from_pixel(32, 32, image::Rgb([250, 250, 250]));
        let mut guided = plain.clone();
        guided.init_image = Some(encode_jpeg(&init).unwrap());
        let decoded = Decoded::new(&guided).unwrap();
        let white = RgbImage::from_pixel(64, 64, image::Rgb([250, 250, 250]));
        for index in 0..2 {
            let with_init = decode(&render_one(&guided, &decoded, index).unwrap().jpeg);
            let without = decode(&render(&plain, index).jpeg);
            assert!(difference(&with_init, &white) < difference(&without, &white) / 2.0, "image {index}");
        }
    }
}
