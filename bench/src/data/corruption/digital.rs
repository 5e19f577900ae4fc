//! Digital corruptions: brightness, contrast, pixelate and JPEG compression (elastic transform
//! has its own file).

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageFormat};

use super::filter::resize_box;
use super::plane::Plane;
use crate::error::{Error, Result};

/// Added to HSV value. For a gray pixel, value is the intensity and the HSV round trip of the
/// reference is the identity, so this is exactly `clip(x + c)`.
const BRIGHTNESS: [f32; 5] = [0.05, 0.1, 0.15, 0.2, 0.3];
/// Factor on the deviation from the image mean.
const CONTRAST: [f32; 5] = [0.75, 0.5, 0.4, 0.3, 0.15];
/// Side of the intermediate image as a fraction of the original (28 -> 26, 25, 23, 21, 18).
const PIXELATE: [f32; 5] = [0.95, 0.9, 0.85, 0.75, 0.65];
/// JPEG quality.
const JPEG_QUALITY: [u8; 5] = [80, 65, 58, 50, 40];

pub(super) fn brightness(p: &Plane, s: usize) -> Plane {
    let c = BRIGHTNESS[s];
    p.map(|v| (v + c).clamp(0.0, 1.0))
}

pub(super) fn contrast(p: &Plane, s: usize) -> Plane {
    let (c, mean) = (CONTRAST[s], p.mean());
    p.map(|v| (v - mean) * c + mean)
}

/// Box-downscale then box-upscale (nearest) back, as Pillow's `resize(..., BOX)` twice.
pub(super) fn pixelate(p: &Plane, s: usize) -> Plane {
    let (w, h) = ((p.w as f32 * PIXELATE[s]) as usize, (p.h as f32 * PIXELATE[s]) as usize);
    resize_box(&resize_box(p, w.max(1), h.max(1)), p.w, p.h)
}

/// Encodes as an 8-bit grayscale JPEG with the `image` crate's encoder (libjpeg's quality
/// scaling of the standard tables; the reference uses Pillow, i.e. libjpeg) and decodes again.
pub(super) fn jpeg_compression(p: &Plane, s: usize) -> Result<Plane> {
    let bytes: Vec<u8> = p.px.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
    let mut encoded = Vec::new();
    JpegEncoder::new_with_quality(&mut encoded, JPEG_QUALITY[s]).encode(&bytes, p.w as u32, p.h as u32, ExtendedColorType::L8)?;
    let decoded = image::load_from_memory_with_format(&encoded, ImageFormat::Jpeg)?.to_luma8();
    if decoded.dimensions() != (p.w as u32, p.h as u32) {
        return Err(Error::InvalidInput(format!("JPEG round trip changed the size to {:?}", decoded.dimensions())));
    }
    Ok(Plane { w: p.w, h: p.h, px: decoded.as_raw().iter().map(|&v| v as f32 / 255.0).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixelate_sizes_follow_the_reference() {
        let sides: Vec<usize> = PIXELATE.iter().map(|c| (28.0 * c) as usize).collect();
        assert_eq!(sides, vec![26, 25, 23, 21, 18]);
    }

    #[test]
    fn contrast_keeps_the_mean_and_brightness_clips() {
        let p = Plane::from_fn(28, 28, |x, _| if x < 14 { 0.0 } else { 1.0 });
        let out = contrast(&p, 4);
        assert!((out.mean() - p.mean()).abs() < 1e-6);
        assert!((out.get(0, 0) - 0.5 * (1.0 - 0.15)).abs() < 1e-6);
        assert_eq!(brightness(&p, 4).get(20, 0), 1.0);
        assert_eq!(brightness(&p, 4).get(0, 0), 0.3);
    }
}
