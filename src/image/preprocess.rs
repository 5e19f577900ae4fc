//! CLIP preprocessing: shorter side to N (bicubic), centre crop, rescale, normalise.
//!
//! The resize uses the `image` crate's Catmull-Rom filter (bicubic, a = -0.5, with the filter
//! widened when downscaling, as PIL does for `resample=3`), so values are close to but not
//! bit-identical with transformers' PIL-based processor.

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};

use crate::error::{Error, Result};
use crate::model::PreprocessorConfig;

/// Preprocesses one decoded image into `3 * crop * crop` floats, channel-major (CHW).
pub fn preprocess(img: &DynamicImage, cfg: &PreprocessorConfig) -> Vec<f32> {
    let mut rgb: RgbImage = img.to_rgb8();
    if cfg.do_resize {
        let (w, h) = rgb.dimensions();
        let short = w.min(h).max(1) as f64;
        let scale = cfg.shortest_edge as f64 / short;
        let nw = ((w as f64 * scale).round() as u32).max(1);
        let nh = ((h as f64 * scale).round() as u32).max(1);
        if (nw, nh) != (w, h) {
            rgb = image::imageops::resize(&rgb, nw, nh, FilterType::CatmullRom);
        }
    }
    let (w, h) = rgb.dimensions();
    let (out_w, out_h) = if cfg.do_center_crop { (cfg.crop_size as u32, cfg.crop_size as u32) } else { (w, h) };
    // Offsets may be negative when the image is smaller than the crop: those pixels are zero
    // padding, as in transformers' center_crop.
    let left = (w as i64 - out_w as i64).div_euclid(2);
    let top = (h as i64 - out_h as i64).div_euclid(2);
    let plane = (out_w * out_h) as usize;
    let mut out = vec![0f32; 3 * plane];
    for y in 0..out_h as i64 {
        for x in 0..out_w as i64 {
            let (sx, sy) = (x + left, y + top);
            let inside = sx >= 0 && sy >= 0 && sx < w as i64 && sy < h as i64;
            for c in 0..3 {
                let raw = if inside { rgb.get_pixel(sx as u32, sy as u32)[c] as f32 } else { 0.0 };
                let mut v = if cfg.do_rescale { raw * cfg.rescale_factor } else { raw };
                if cfg.do_normalize {
                    v = (v - cfg.mean[c]) / cfg.std[c];
                }
                out[c * plane + (y as usize) * out_w as usize + x as usize] = v;
            }
        }
    }
    out
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

    #[test]
    fn resizes_crops_and_normalises() {
        let cfg = PreprocessorConfig::clip_default(8);
        // A 16x32 image: resized to 8x16, cropped to the middle 8x8.
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(16, 32, |_, _| image::Rgb([255, 0, 128])));
        let out = preprocess(&img, &cfg);
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
        let out = preprocess(&img, &cfg);
        // The 2x2 image sits at offsets 1..3 of the 4x4 crop.
        assert_eq!(out[0], 0.0);
        assert_eq!(out[5], 1.0);
        assert_eq!(out[10], 1.0);
        assert_eq!(out[15], 0.0);
    }
}
