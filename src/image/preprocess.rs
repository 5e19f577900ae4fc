//! CLIP preprocessing: shorter side to N (bicubic), centre crop, rescale, normalise.
//!
//! The resize is `fast_image_resize`'s convolution with the Catmull-Rom filter (bicubic,
//! a = -0.5, support widened when downscaling), the same filter and method as PIL's
//! `resample=3` that transformers' CLIPImageProcessor uses; the output size truncates the long
//! side as transformers does. `tests/it/preprocess.rs` checks the result against that processor
//! (within one 8-bit level: both resize in fixed point and round to u8).

use std::borrow::Cow;

use candle_core::{Device, Tensor};
use fast_image_resize::images::{Image as ResizeImage, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, GenericImageView};

use super::pixels::{clip_pixels, Pixels};
use crate::error::{Error, Result};
use crate::model::PreprocessorConfig;

/// Preprocesses one decoded image into `3 * crop * crop` floats, channel-major (CHW).
///
/// Grayscale images are resized as one channel and repeated, which gives the same values as
/// converting to RGB first, for a third of the work.
pub fn preprocess(img: &DynamicImage, cfg: &PreprocessorConfig) -> Result<Vec<f32>> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::InvalidInput(format!("image has no pixels ({w}x{h})")));
    }
    let Pixels { data: pixels, channels } = clip_pixels(img);
    let (pixels, w, h) = match resized_size(w, h, cfg) {
        Some((nw, nh)) => (Cow::Owned(resize(&pixels, channels, (w, h), (nw, nh))?), nw, nh),
        None => (pixels, w, h),
    };
    let (out_w, out_h) = if cfg.do_center_crop { (cfg.crop_size as u32, cfg.crop_size as u32) } else { (w, h) };
    // Offsets may be negative when the image is smaller than the crop: those pixels are zero
    // padding, as in transformers' center_crop.
    let left = (w as i64 - out_w as i64).div_euclid(2);
    let top = (h as i64 - out_h as i64).div_euclid(2);
    let plane = (out_w * out_h) as usize;
    let mut out = vec![0f32; 3 * plane];
    for c in 0..3 {
        let source_channel = if channels == 1 { 0 } else { c };
        let scale = if cfg.do_rescale { cfg.rescale_factor } else { 1.0 };
        let (mean, std) = if cfg.do_normalize { (cfg.mean[c], cfg.std[c]) } else { (0.0, 1.0) };
        let value = |raw: f32| (raw * scale - mean) / std;
        let out_plane = &mut out[c * plane..(c + 1) * plane];
        for y in 0..out_h as i64 {
            let sy = y + top;
            for x in 0..out_w as i64 {
                let sx = x + left;
                let inside = sx >= 0 && sy >= 0 && sx < w as i64 && sy < h as i64;
                let raw = if inside { pixels[(sy as usize * w as usize + sx as usize) * channels + source_channel] as f32 } else { 0.0 };
                out_plane[y as usize * out_w as usize + x as usize] = value(raw);
            }
        }
    }
    Ok(out)
}

/// The size after resizing the shorter side to `shortest_edge`, or `None` when no resize is
/// needed. The longer side is truncated, as transformers' `get_resize_output_image_size` does.
fn resized_size(w: u32, h: u32, cfg: &PreprocessorConfig) -> Option<(u32, u32)> {
    if !cfg.do_resize {
        return None;
    }
    let edge = cfg.shortest_edge as u64;
    let (short, long) = (w.min(h) as u64, w.max(h) as u64);
    let new_long = (edge * long / short).max(1) as u32;
    let new_short = edge.max(1) as u32;
    let size = if w <= h { (new_short, new_long) } else { (new_long, new_short) };
    (size != (w, h)).then_some(size)
}

/// Resizes in two passes, horizontal then vertical, each rounded to u8, as PIL does: with
/// both passes in one call `fast_image_resize` runs the vertical pass first for u8 images, and
/// the intermediate rounding and clipping then differ from PIL's on sharp edges (up to 12
/// levels on a checkerboard, measured in tests/it/preprocess.rs).
fn resize(pixels: &[u8], channels: usize, from: (u32, u32), to: (u32, u32)) -> Result<Vec<u8>> {
    let pixel_type = if channels == 1 { PixelType::U8 } else { PixelType::U8x3 };
    let resize_error = |e: &dyn std::fmt::Display| Error::InvalidInput(format!("resizing {}x{} to {}x{}: {e}", from.0, from.1, to.0, to.1));
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    let mut resizer = Resizer::new();
    let src = ImageRef::new(from.0, from.1, pixels, pixel_type).map_err(|e| resize_error(&e))?;
    let mut wide = ResizeImage::new(to.0, from.1, pixel_type);
    resizer.resize(&src, &mut wide, &options).map_err(|e| resize_error(&e))?;
    if from.1 == to.1 {
        return Ok(wide.into_vec());
    }
    let mut dst = ResizeImage::new(to.0, to.1, pixel_type);
    resizer.resize(&wide, &mut dst, &options).map_err(|e| resize_error(&e))?;
    Ok(dst.into_vec())
}

/// Stacks preprocessed images into a `[batch, 3, size, size]` tensor.
pub fn to_tensor(images: &[Vec<f32>], size: usize, device: &Device) -> Result<Tensor> {
    let per = 3 * size * size;
    if let Some(bad) = images.iter().find(|v| v.len() != per) {
        return Err(Error::InvalidInput(format!("preprocessed image has {} values, expected {per}", bad.len())));
    }
    let flat: Vec<f32> = images.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (images.len(), 3, size, size), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    #[test]
    fn resizes_crops_and_normalises() {
        let cfg = PreprocessorConfig::clip_default(8);
        // A 16x32 image: resized to 8x16, cropped to the middle 8x8.
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(16, 32, |_, _| image::Rgb([255, 0, 128])));
        let out = preprocess(&img, &cfg).unwrap();
        assert_eq!(out.len(), 3 * 64);
        let expect_r = (1.0 - cfg.mean[0]) / cfg.std[0];
        let expect_g = (0.0 - cfg.mean[1]) / cfg.std[1];
        assert!((out[0] - expect_r).abs() < 1e-4, "{}", out[0]);
        assert!((out[64] - expect_g).abs() < 1e-4, "{}", out[64]);
    }

    #[test]
    fn small_images_are_padded_without_resize() {
        let mut cfg = PreprocessorConfig::clip_default(4);
        cfg.do_resize = false;
        cfg.do_normalize = false;
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(2, 2, image::Luma([255])));
        let out = preprocess(&img, &cfg).unwrap();
        // The 2x2 image sits at offsets 1..3 of the 4x4 crop.
        assert_eq!(out[0], 0.0);
        assert_eq!(out[5], 1.0);
        assert_eq!(out[10], 1.0);
        assert_eq!(out[15], 0.0);
    }

    #[test]
    fn grayscale_matches_converting_to_rgb_first() {
        let cfg = PreprocessorConfig::clip_default(12);
        let gray = image::GrayImage::from_fn(37, 29, |x, y| image::Luma([((x * 31 + y * 17) % 256) as u8]));
        let rgb = DynamicImage::ImageLuma8(gray.clone()).to_rgb8();
        let from_gray = preprocess(&DynamicImage::ImageLuma8(gray), &cfg).unwrap();
        let from_rgb = preprocess(&DynamicImage::ImageRgb8(rgb), &cfg).unwrap();
        assert_eq!(from_gray, from_rgb);
    }

    #[test]
    fn an_empty_image_is_an_error() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(0, 5));
        assert!(preprocess(&img, &PreprocessorConfig::clip_default(4)).is_err());
    }
}
