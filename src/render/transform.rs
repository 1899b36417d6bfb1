//! The built-in variations: deterministic image operations that visibly do what was asked, with
//! no model. Upscales resample (Catmull-Rom) and sharpen; background removal makes transparent
//! the region around the picture that matches a smooth background fitted to its border; unzoom
//! shrinks the picture into a blurred, extended copy of itself.

use std::io::Cursor;

use bytes::Bytes;
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};

use super::RenderError;
use super::builtin::{SplitMix, encode_jpeg};
use crate::records::{Transform, UniversalUpscale};

/// The picture unzoom keeps in the middle, as a share of each side.
const UNZOOM_SCALE: f32 = 2.0 / 3.0;
/// How far (RGB distance) a pixel may be from the fitted background and still be background.
const BACKGROUND_TOLERANCE: f32 = 28.0;
/// Beyond this distance a pixel is fully opaque; between the two, partly (soft edges).
const FOREGROUND_DISTANCE: f32 = 56.0;

/// `transform` applied to `source` (any format Easel stores), encoded as the transform's
/// [`Transform::extension`] says.
pub fn apply(source: &[u8], transform: &Transform) -> Result<Bytes, RenderError> {
    let picture =
        image::load_from_memory(source).map_err(|e| RenderError(format!("the source image cannot be decoded: {e}")))?;
    match transform {
        Transform::Upscale => encode_jpeg(&resize(&picture, 2.0).to_rgb8()),
        Transform::UniversalUpscale(settings) => encode_jpeg(&universal_upscale(&picture, settings).to_rgb8()),
        Transform::Unzoom => encode_jpeg(&unzoom(&picture).to_rgb8()),
        Transform::NoBackground => encode_png(&remove_background(&picture.to_rgba8())),
    }
}

/// The size of a picture of `width` x `height` scaled by `factor`, at least 1 x 1.
pub fn scaled_size(width: u32, height: u32, factor: f64) -> (u32, u32) {
    let side = |n: u32| ((f64::from(n) * factor).round() as u32).max(1);
    (side(width), side(height))
}

fn resize(picture: &DynamicImage, factor: f64) -> DynamicImage {
    let (width, height) = scaled_size(picture.width(), picture.height(), factor);
    picture.resize_exact(width, height, FilterType::CatmullRom)
}

/// Resampled by the multiplier, then sharpened: more with a higher `detailContrast` (1 to 10,
/// 5 when not given).
fn universal_upscale(picture: &DynamicImage, settings: &UniversalUpscale) -> DynamicImage {
    let upscaled = resize(picture, settings.multiplier);
    let contrast = f32::from(settings.detail_contrast.unwrap_or(5));
    upscaled.unsharpen(0.6 + contrast * 0.12, 2)
}

/// The picture shrunk to the middle of a canvas of the same size, whose surroundings are the
/// picture itself, stretched and blurred: a zoomed-out view with the edges continued.
fn unzoom(picture: &DynamicImage) -> DynamicImage {
    let (width, height) = (picture.width(), picture.height());
    let sigma = (width.min(height) as f32 / 24.0).max(1.0);
    let mut canvas = picture.to_rgba8();
    canvas = image::imageops::blur(&canvas, sigma);
    let (x, y, inner_width, inner_height) = unzoom_inner(width, height);
    let inner = picture.resize_exact(inner_width, inner_height, FilterType::CatmullRom).to_rgba8();
    image::imageops::overlay(&mut canvas, &inner, i64::from(x), i64::from(y));
    DynamicImage::ImageRgba8(canvas)
}

/// Where unzoom puts the picture on a canvas of `width` x `height`: left, top, width, height.
pub fn unzoom_inner(width: u32, height: u32) -> (u32, u32, u32, u32) {
    let inner_width = ((width as f32 * UNZOOM_SCALE).round() as u32).clamp(1, width.max(1));
    let inner_height = ((height as f32 * UNZOOM_SCALE).round() as u32).clamp(1, height.max(1));
    ((width - inner_width) / 2, (height - inner_height) / 2, inner_width, inner_height)
}

/// Unzoom as an outpaint, for backends that inpaint: the built-in unzoom (the picture shrunk into
/// its blurred surroundings) as the init picture, PNG, and the mask of what to paint (PNG, white
/// around the shrunk picture, black over it), with their width and height.
pub fn unzoom_outpaint(source: &[u8]) -> Result<(Bytes, Bytes, u32, u32), RenderError> {
    let picture =
        image::load_from_memory(source).map_err(|e| RenderError(format!("the source image cannot be decoded: {e}")))?;
    let (width, height) = (picture.width(), picture.height());
    let canvas = unzoom(&picture).to_rgba8();
    let (x, y, inner_width, inner_height) = unzoom_inner(width, height);
    let inside = |px: u32, py: u32| (x..x + inner_width).contains(&px) && (y..y + inner_height).contains(&py);
    let mask = image::GrayImage::from_fn(width, height, |px, py| image::Luma([if inside(px, py) { 0 } else { 255 }]));
    let mut mask_png = Cursor::new(Vec::new());
    mask.write_to(&mut mask_png, ImageFormat::Png).map_err(|e| RenderError(format!("PNG encoding failed: {e}")))?;
    Ok((encode_png(&canvas)?, Bytes::from(mask_png.into_inner()), width, height))
}

/// A mask that is white where to paint (as `unzoom_outpaint` makes it) as the PNG OpenAI's image
/// edits take: transparent where to paint, opaque elsewhere.
pub fn transparent_where_white(mask: &[u8]) -> Result<Bytes, RenderError> {
    let mask =
        image::load_from_memory(mask).map_err(|e| RenderError(format!("the mask cannot be decoded: {e}")))?.to_luma8();
    let alpha = RgbaImage::from_fn(mask.width(), mask.height(), |x, y| {
        let white = mask.get_pixel(x, y).0[0] >= 128;
        Rgba([0, 0, 0, if white { 0 } else { 255 }])
    });
    encode_png(&alpha)
}

/// A picture a backend made for `transform` (PNG, JPEG or WebP) as the file Easel stores: a PNG
/// with its transparency for background removal, a JPEG otherwise.
pub fn as_stored(bytes: &[u8], transform: &Transform) -> Result<Bytes, RenderError> {
    let picture = image::load_from_memory(bytes).map_err(|e| RenderError(format!("it cannot be decoded: {e}")))?;
    match transform {
        Transform::NoBackground => encode_png(&picture.to_rgba8()),
        _ => encode_jpeg(&picture.to_rgb8()),
    }
}

/// The picture with its background transparent. The background is modelled as a linear
/// gradient per channel, fitted (least squares) to the border pixels; the pixels close to it
/// that connect to the border are background. Pixels close to the model inside the subject
/// stay, and edges get partial alpha.
fn remove_background(picture: &RgbaImage) -> RgbaImage {
    let (width, height) = picture.dimensions();
    let model = GradientModel::fit(picture);
    let distance = |x: u32, y: u32| model.distance(picture, x, y);
    // Flood fill from every border pixel close to the model.
    let mut background = vec![false; (width * height) as usize];
    let mut stack = Vec::new();
    for x in 0..width {
        stack.extend([(x, 0), (x, height - 1)]);
    }
    for y in 0..height {
        stack.extend([(0, y), (width - 1, y)]);
    }
    while let Some((x, y)) = stack.pop() {
        let at = (y * width + x) as usize;
        if background[at] || distance(x, y) > BACKGROUND_TOLERANCE {
            continue;
        }
        background[at] = true;
        if x > 0 {
            stack.push((x - 1, y));
        }
        if y > 0 {
            stack.push((x, y - 1));
        }
        if x + 1 < width {
            stack.push((x + 1, y));
        }
        if y + 1 < height {
            stack.push((x, y + 1));
        }
    }
    let mut out = picture.clone();
    for (x, y, pixel) in out.enumerate_pixels_mut() {
        let at = (y * width + x) as usize;
        let alpha = if background[at] {
            0.0
        } else if touches(&background, width, height, x, y) {
            // The subject's rim: partly transparent as far as it looks like background.
            ((distance(x, y) - BACKGROUND_TOLERANCE) / (FOREGROUND_DISTANCE - BACKGROUND_TOLERANCE)).clamp(0.35, 1.0)
        } else {
            1.0
        };
        *pixel = Rgba([pixel[0], pixel[1], pixel[2], (alpha * f32::from(pixel[3])).round() as u8]);
    }
    out
}

/// Whether a neighbour of (`x`, `y`) is background.
fn touches(background: &[bool], width: u32, height: u32, x: u32, y: u32) -> bool {
    let at = |x: u32, y: u32| background[(y * width + x) as usize];
    (x > 0 && at(x - 1, y))
        || (y > 0 && at(x, y - 1))
        || (x + 1 < width && at(x + 1, y))
        || (y + 1 < height && at(x, y + 1))
}

/// `value = a + b * x + c * y` per channel.
struct GradientModel([[f32; 3]; 3]);

/// How many candidate models the background fit tries.
const FIT_TRIALS: usize = 256;

impl GradientModel {
    /// The model that most border pixels agree with (a deterministic RANSAC: models through
    /// three border pixels, the best refined by least squares on the pixels it explains), so
    /// subjects that touch the border do not skew it.
    fn fit(picture: &RgbaImage) -> GradientModel {
        let (width, height) = picture.dimensions();
        let mut border = Vec::new();
        for x in 0..width {
            border.extend([(x, 0), (x, height - 1)]);
        }
        for y in 1..height.saturating_sub(1) {
            border.extend([(0, y), (width - 1, y)]);
        }
        let flat = GradientModel::least_squares(picture, &border);
        if border.len() < 3 {
            return flat;
        }
        let inliers = |model: &GradientModel| -> Vec<(u32, u32)> {
            border.iter().copied().filter(|&(x, y)| model.distance(picture, x, y) <= BACKGROUND_TOLERANCE).collect()
        };
        let mut best = inliers(&flat);
        let mut random = SplitMix(0x5EED);
        let mut pick = || border[(random.next() % border.len() as u64) as usize];
        for _ in 0..FIT_TRIALS {
            let sample = [pick(), pick(), pick()];
            let candidate = GradientModel::least_squares(picture, &sample);
            let explained = inliers(&candidate);
            if explained.len() > best.len() {
                best = explained;
            }
        }
        GradientModel::least_squares(picture, &best)
    }

    /// The least-squares model of `points` (a flat colour when they cannot fix a plane).
    fn least_squares(picture: &RgbaImage, points: &[(u32, u32)]) -> GradientModel {
        let mut sums = [[0f64; 3]; 3];
        let mut targets = [[0f64; 3]; 3];
        for &(x, y) in points {
            let basis = [1.0, f64::from(x), f64::from(y)];
            let pixel = picture.get_pixel(x, y);
            for row in 0..3 {
                for col in 0..3 {
                    sums[row][col] += basis[row] * basis[col];
                }
                for channel in 0..3 {
                    targets[channel][row] += basis[row] * f64::from(pixel[channel]);
                }
            }
        }
        let mut coefficients = [[0f32; 3]; 3];
        for channel in 0..3 {
            let solved =
                solve3(sums, targets[channel]).unwrap_or_else(|| [targets[channel][0] / sums[0][0].max(1.0), 0.0, 0.0]);
            coefficients[channel] = solved.map(|v| v as f32);
        }
        GradientModel(coefficients)
    }

    fn at(&self, x: u32, y: u32) -> [f32; 3] {
        self.0.map(|[a, b, c]| a + b * x as f32 + c * y as f32)
    }

    /// How far (RGB distance) the pixel at (`x`, `y`) is from the model.
    fn distance(&self, picture: &RgbaImage, x: u32, y: u32) -> f32 {
        let pixel = picture.get_pixel(x, y);
        let expected = self.at(x, y);
        (0..3).map(|c| (f32::from(pixel[c]) - expected[c]).powi(2)).sum::<f32>().sqrt()
    }
}

/// The solution of a 3x3 linear system (Cramer's rule), or `None` if it is singular.
fn solve3(m: [[f64; 3]; 3], v: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(m);
    if d.abs() < 1e-9 {
        return None;
    }
    let mut out = [0.0; 3];
    for (column, value) in out.iter_mut().enumerate() {
        let mut replaced = m;
        for row in 0..3 {
            replaced[row][column] = v[row];
        }
        *value = det(replaced) / d;
    }
    Some(out)
}

fn encode_png(picture: &RgbaImage) -> Result<Bytes, RenderError> {
    let mut png = Cursor::new(Vec::new());
    picture.write_to(&mut png, ImageFormat::Png).map_err(|e| RenderError(format!("PNG encoding failed: {e}")))?;
    Ok(Bytes::from(png.into_inner()))
}

#[cfg(test)]
mod tests {
    use image::{GenericImageView, Rgb, RgbImage};

    use super::*;

    /// A vertical gradient with a red square in the middle.
    fn subject_on_gradient() -> Vec<u8> {
        let picture = RgbImage::from_fn(96, 64, |x, y| {
            if (32..64).contains(&x) && (16..48).contains(&y) {
                Rgb([220, 30, 30])
            } else {
                Rgb([40, (60 + y * 2) as u8, 200])
            }
        });
        encode_jpeg(&picture).unwrap().to_vec()
    }

    #[test]
    fn background_removal_keeps_the_subject_and_clears_the_gradient() {
        let png = apply(&subject_on_gradient(), &Transform::NoBackground).unwrap();
        let picture = image::load_from_memory_with_format(&png, ImageFormat::Png).unwrap();
        assert_eq!(picture.dimensions(), (96, 64));
        for corner in [(0, 0), (95, 0), (0, 63), (95, 63), (10, 32), (85, 32)] {
            assert_eq!(picture.get_pixel(corner.0, corner.1)[3], 0, "background at {corner:?}");
        }
        let centre = picture.get_pixel(48, 32);
        assert_eq!(centre[3], 255);
        assert!(centre[0] > 180 && centre[1] < 80, "{centre:?}");
    }

    #[test]
    fn unzoom_shrinks_the_picture_into_its_own_surroundings() {
        let zoomed_out = apply(&subject_on_gradient(), &Transform::Unzoom).unwrap();
        let picture = image::load_from_memory(&zoomed_out).unwrap().to_rgb8();
        assert_eq!(picture.dimensions(), (96, 64));
        // The red square is now 2/3 as wide: about 21 of 96 pixels instead of 32.
        let red = (0..96).filter(|&x| picture.get_pixel(x, 32)[0] > 150 && picture.get_pixel(x, 32)[1] < 90).count();
        assert!((17..=25).contains(&red), "{red} red pixels across the middle");
    }

    #[test]
    fn upscales_scale_by_their_factor() {
        let source = subject_on_gradient();
        let doubled = image::load_from_memory(&apply(&source, &Transform::Upscale).unwrap()).unwrap();
        assert_eq!(doubled.dimensions(), (192, 128));
        let settings = UniversalUpscale {
            multiplier: 1.5,
            creativity_strength: None,
            detail_contrast: Some(10),
            similarity: None,
            style: None,
            ultra_style: None,
            prompt: None,
        };
        let universal =
            image::load_from_memory(&apply(&source, &Transform::UniversalUpscale(settings)).unwrap()).unwrap();
        assert_eq!(universal.dimensions(), (144, 96));
        assert!(apply(b"not a picture", &Transform::Upscale).unwrap_err().0.contains("cannot be decoded"));
    }
}
