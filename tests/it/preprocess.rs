//! CLIP preprocessing against transformers' PIL-based CLIPImageProcessor on the images that
//! tests/fixtures/make_preprocess_reference.py defines (values in
//! tests/fixtures/preprocess-reference.json, produced by that script).

use cliptta::image::preprocess;
use cliptta::model::PreprocessorConfig;
use image::{DynamicImage, GrayImage, RgbImage};

fn rgb_pattern(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, if (x / 10 + y / 10) % 2 == 1 { 255 } else { 0 }])
    }))
}

fn gray_pattern(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 37 + y * 11) % 256) as u8])))
}

#[test]
fn matches_transformers_clip_image_processor() -> anyhow::Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/preprocess-reference.json");
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let cases = reference["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let size = case["size"].as_u64().expect("size") as usize;
        let image = match name {
            "rgb_500x375_to_28" => rgb_pattern(500, 375),
            "rgb_50x37_to_8" => rgb_pattern(50, 37),
            "rgb_61x23_to_16" => rgb_pattern(61, 23),
            "gray_23x61_to_32" => gray_pattern(23, 61),
            other => panic!("unknown case {other}"),
        };
        let cfg = PreprocessorConfig::clip_default(size);
        let got = preprocess(&image, &cfg)?;
        let want: Vec<f32> = case["values"].as_array().expect("values").iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(got.len(), want.len(), "{name}");
        // Both sides resize in 8-bit fixed point and round to u8, so they may differ by one
        // level of 255 in a pixel, which is 1/255/std after normalising.
        let one_level = 1.0 / 255.0 / cfg.std.iter().copied().fold(f32::INFINITY, f32::min);
        let mut off_by_one = 0;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let diff = (g - w).abs();
            assert!(diff <= one_level * 1.01, "{name}[{i}]: got {g}, transformers {w} (diff {diff}, one level {one_level})");
            if diff > 1e-4 {
                off_by_one += 1;
            }
        }
        // Rounding ties may differ, but not most pixels.
        assert!(off_by_one * 20 <= got.len(), "{name}: {off_by_one} of {} values differ by one level", got.len());
    }
    Ok(())
}
