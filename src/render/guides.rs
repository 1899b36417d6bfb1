//! How the built-in renderer follows the pictures that guide a generation: a canvas request
//! composites the rendered picture into the canvas picture where the mask (or the canvas's
//! transparency) says to paint; a controlnet's edges are drawn into the picture by its weight;
//! image prompts pull its colours toward theirs. Deterministic, like everything it renders.

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, RgbImage, RgbaImage};

use super::{Guides, RenderError};
use crate::generation::GenerationParams;

/// A generation's guides, decoded and sized to its pictures once for all of them.
pub struct DecodedGuides {
    /// The canvas picture and its mask.
    canvas: Option<(RgbaImage, Option<GrayImage>)>,
    /// Each controlnet's edges and weight.
    edges: Vec<(GrayImage, f64)>,
    /// The image prompts' mean colour.
    colour: Option<[f64; 3]>,
}

impl DecodedGuides {
    /// Decodes `guides` for pictures of `width` x `height`.
    pub fn new(params: &GenerationParams, guides: &Guides, width: u32, height: u32) -> Result<Self, RenderError> {
        let sized = |field, bytes| decode(field, bytes).map(|p| p.resize_exact(width, height, FilterType::Triangle));
        let canvas = match (&params.canvas, &guides.canvas) {
            (Some(_), Some((init, mask))) => Some((
                sized("canvasInitId", init)?.to_rgba8(),
                mask.as_ref().map(|mask| sized("canvasMaskId", mask).map(|m| m.to_luma8())).transpose()?,
            )),
            _ => None,
        };
        let edges = guides
            .controls
            .iter()
            .map(|(control, weight)| Ok((edges(&sized("controlnets", control)?.to_luma8()), *weight)))
            .collect::<Result<_, RenderError>>()?;
        let mut colour = None;
        for prompt in &guides.image_prompts {
            let mean = mean_colour(&decode("imagePrompts", prompt)?.to_rgb8());
            let sum = colour.get_or_insert([0f64; 3]);
            for c in 0..3 {
                sum[c] += mean[c] / guides.image_prompts.len() as f64;
            }
        }
        Ok(DecodedGuides { canvas, edges, colour })
    }
}

/// `picture` (the rendered one) changed as the guides ask.
pub fn apply(picture: &mut RgbImage, params: &GenerationParams, guides: &DecodedGuides) {
    if let (Some(canvas), Some((init, mask))) = (&params.canvas, &guides.canvas) {
        composite(picture, init, mask.as_ref(), &canvas.request_type, params.init_strength);
    }
    for (edges, weight) in &guides.edges {
        for (pixel, edge) in picture.pixels_mut().zip(edges.pixels()) {
            let darken = (f64::from(edge[0]) / 255.0 * weight * 0.8).min(1.0);
            for channel in 0..3 {
                pixel[channel] = (f64::from(pixel[channel]) * (1.0 - darken)) as u8;
            }
        }
    }
    if let Some(colour) = guides.colour {
        let pull = params.image_prompt_weight.unwrap_or(0.5) * 0.6;
        for pixel in picture.pixels_mut() {
            for c in 0..3 {
                pixel[c] = (f64::from(pixel[c]) * (1.0 - pull) + colour[c] * pull) as u8;
            }
        }
    }
}

/// A canvas request for an inpainting backend: the canvas picture as JPEG at the generation's
/// size, the mask as PNG (white = repaint: the mask's white for INPAINT, and for OUTPAINT also
/// where the canvas is transparent; none for IMG2IMG and SKETCH2IMG), and how much of the canvas
/// to keep when `init_strength` is not given.
pub fn canvas_for_backend(
    canvas: &crate::generation::Canvas,
    init: &[u8],
    mask: Option<&[u8]>,
    width: u32,
    height: u32,
) -> Result<(bytes::Bytes, Option<bytes::Bytes>, f64), RenderError> {
    let init = decode("canvasInitId", init)?.resize_exact(width, height, FilterType::Triangle).to_rgba8();
    let mask = mask
        .map(|mask| {
            decode("canvasMaskId", mask).map(|m| m.resize_exact(width, height, FilterType::Triangle).to_luma8())
        })
        .transpose()?;
    let repaint = match canvas.request_type.as_str() {
        "INPAINT" | "OUTPAINT" => Some(GrayImage::from_fn(width, height, |x, y| {
            let masked = mask.as_ref().map_or(0, |m| m.get_pixel(x, y)[0]);
            let transparent = if canvas.request_type == "OUTPAINT" { 255 - init.get_pixel(x, y)[3] } else { 0 };
            image::Luma([masked.max(transparent)])
        })),
        _ => None,
    };
    let jpeg = super::builtin::encode_jpeg(&DynamicImage::ImageRgba8(init).to_rgb8())?;
    let png = repaint
        .map(|mask| {
            let mut png = std::io::Cursor::new(Vec::new());
            mask.write_to(&mut png, image::ImageFormat::Png)
                .map(|()| bytes::Bytes::from(png.into_inner()))
                .map_err(|e| RenderError(format!("the mask cannot be encoded: {e}")))
        })
        .transpose()?;
    let keep = match canvas.request_type.as_str() {
        "INPAINT" | "OUTPAINT" => 0.25,
        "SKETCH2IMG" => 0.65,
        _ => 0.5,
    };
    Ok((jpeg, png, keep))
}

fn decode(field: &str, bytes: &[u8]) -> Result<DynamicImage, RenderError> {
    image::load_from_memory(bytes).map_err(|e| RenderError(format!("the {field} picture cannot be decoded: {e}")))
}

/// Where to paint (0..1 per pixel) and how the rendered picture joins the canvas picture:
/// - `INPAINT`: where the mask is white;
/// - `OUTPAINT`: where the mask is white or the canvas picture is transparent;
/// - `IMG2IMG`, `SKETCH2IMG`: everywhere, keeping `init_strength` of the canvas picture (0.5 and
///   0.65 when not given: a sketch keeps more of its lines).
fn composite(picture: &mut RgbImage, init: &RgbaImage, mask: Option<&GrayImage>, kind: &str, strength: Option<f64>) {
    let keep = match kind {
        "SKETCH2IMG" => strength.unwrap_or(0.65),
        _ => strength.unwrap_or(0.5),
    };
    for (x, y, pixel) in picture.enumerate_pixels_mut() {
        let base = init.get_pixel(x, y);
        let masked = mask.map_or(0.0, |m| f64::from(m.get_pixel(x, y)[0]) / 255.0);
        let paint = match kind {
            "INPAINT" => masked,
            "OUTPAINT" => masked.max(1.0 - f64::from(base[3]) / 255.0),
            _ => 1.0 - keep,
        };
        for c in 0..3 {
            pixel[c] = (f64::from(base[c]) * (1.0 - paint) + f64::from(pixel[c]) * paint).round() as u8;
        }
    }
}

/// The strength of edges (Sobel on luminance), 0 to 255.
fn edges(luma: &GrayImage) -> GrayImage {
    let (width, height) = luma.dimensions();
    let at = |x: i64, y: i64| {
        f64::from(luma.get_pixel(x.clamp(0, width as i64 - 1) as u32, y.clamp(0, height as i64 - 1) as u32)[0])
    };
    GrayImage::from_fn(width, height, |x, y| {
        let (x, y) = (i64::from(x), i64::from(y));
        let gx = at(x + 1, y - 1) + 2.0 * at(x + 1, y) + at(x + 1, y + 1)
            - at(x - 1, y - 1)
            - 2.0 * at(x - 1, y)
            - at(x - 1, y + 1);
        let gy = at(x - 1, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1)
            - at(x - 1, y - 1)
            - 2.0 * at(x, y - 1)
            - at(x + 1, y - 1);
        image::Luma([((gx * gx + gy * gy).sqrt() / 4.0).min(255.0) as u8])
    })
}

fn mean_colour(picture: &RgbImage) -> [f64; 3] {
    let count = f64::from(picture.width() * picture.height()).max(1.0);
    let mut sum = [0f64; 3];
    for pixel in picture.pixels() {
        for c in 0..3 {
            sum[c] += f64::from(pixel[c]);
        }
    }
    sum.map(|s| s / count)
}

#[cfg(test)]
mod tests {
    use image::{Luma, Rgb, Rgba};

    use super::*;

    #[test]
    fn inpainting_paints_only_where_the_mask_is_white() {
        let mut picture = RgbImage::from_pixel(8, 8, Rgb([0, 0, 255]));
        let init = RgbaImage::from_pixel(8, 8, Rgba([255, 0, 0, 255]));
        let mask = GrayImage::from_fn(8, 8, |x, _| Luma([if x < 4 { 0 } else { 255 }]));
        composite(&mut picture, &init, Some(&mask), "INPAINT", None);
        assert_eq!(picture.get_pixel(1, 1), &Rgb([255, 0, 0]));
        assert_eq!(picture.get_pixel(6, 1), &Rgb([0, 0, 255]));
    }

    #[test]
    fn outpainting_fills_the_transparent_part_of_the_canvas() {
        let mut picture = RgbImage::from_pixel(8, 8, Rgb([0, 0, 255]));
        let init = RgbaImage::from_fn(8, 8, |_, y| Rgba([255, 0, 0, if y < 4 { 255 } else { 0 }]));
        composite(&mut picture, &init, None, "OUTPAINT", None);
        assert_eq!(picture.get_pixel(1, 1), &Rgb([255, 0, 0]));
        assert_eq!(picture.get_pixel(1, 6), &Rgb([0, 0, 255]));
    }

    #[test]
    fn edges_mark_the_outline_of_a_shape() {
        let square = GrayImage::from_fn(16, 16, |x, y| {
            Luma([if (4..12).contains(&x) && (4..12).contains(&y) { 255 } else { 0 }])
        });
        let outline = edges(&square);
        assert!(outline.get_pixel(4, 8)[0] > 200, "{}", outline.get_pixel(4, 8)[0]);
        assert_eq!(outline.get_pixel(8, 8)[0], 0);
        assert_eq!(outline.get_pixel(0, 0)[0], 0);
    }
}
