//! Every kind of image a lake holds (tests/fixtures/formats/: PNG 1/2/4/8/16-bit, grey, grey+
//! alpha, palette with and without transparency, RGBA, interlaced; JPEG baseline, 4:4:4,
//! progressive, greyscale, CMYK, EXIF orientations 1-8; animated and transparent GIF; BMP 1/8/
//! 24/32-bit; TIFF RGB, LZW, RGBA, 16-bit grey; WebP lossless, lossy, with alpha and EXIF; 1x1
//! and 400x3; a PNG named .jpg) decodes to the pixels transformers' CLIPImageProcessor starts
//! from and preprocesses to its tensor. The reference is tests/fixtures/formats-reference.json,
//! written by tests/fixtures/make_format_lake.py with PIL and transformers.

use cliptta::image::{clip_pixels, decode, decode_and_preprocess, DecodeLimits};
use cliptta::model::PreprocessorConfig;

fn reference() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/formats-reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference")).expect("json")
}

/// JPEGs decode with another IDCT and chroma upsampling (zune-jpeg) than PIL's libjpeg-turbo,
/// so they are compared with a tolerance (measured 2026-12-01: at most 9 levels, mean 0.38, on
/// the 4:2:0 files); everything else, lossy WebP included, must be identical.
fn lossy(case: &serde_json::Value) -> bool {
    case["format"] == "JPEG"
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

#[test]
fn every_format_decodes_to_the_pixels_transformers_sees() {
    let reference = reference();
    let cases = reference["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 50);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/formats");
    let size = reference["shortest_edge"].as_u64().expect("size") as usize;
    let cfg = PreprocessorConfig::clip_default(size);
    // One 8-bit level after normalising (the smallest std of the three channels).
    let level = 1.0 / 255.0 / 0.26130258;
    let mut report = Vec::new();
    for case in cases {
        let file = case["file"].as_str().expect("file");
        let bytes = std::fs::read(format!("{dir}/{file}")).expect("fixture");
        let img = decode(&bytes, &DecodeLimits::default()).unwrap_or_else(|e| panic!("{file}: {e}"));
        let want_size = [case["size"][0].as_u64().unwrap() as u32, case["size"][1].as_u64().unwrap() as u32];
        assert_eq!([img.width(), img.height()], want_size, "{file}: size after EXIF orientation");
        let (want_rgb, want_values) = match case.get("values_scaled") {
            Some(scaled) => (unhex(case["rgb_hex_scaled"].as_str().unwrap()), scaled),
            None => (unhex(case["rgb_hex"].as_str().unwrap()), &case["values"]),
        };
        let pixels = clip_pixels(&img);
        let got_rgb: Vec<u8> = if pixels.channels == 1 { pixels.data.iter().flat_map(|&g| [g, g, g]).collect() } else { pixels.data.to_vec() };
        assert_eq!(got_rgb.len(), want_rgb.len(), "{file}");
        let diffs: Vec<u32> = got_rgb.iter().zip(&want_rgb).map(|(a, b)| u32::from(a.abs_diff(*b))).collect();
        let max = diffs.iter().copied().max().unwrap_or(0);
        let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;

        let values = decode_and_preprocess(&bytes, &DecodeLimits::default(), &cfg).unwrap_or_else(|e| panic!("{file}: {e}"));
        let want: Vec<f32> = want_values.as_array().expect("values").iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let value_max = values.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / level;
        report.push(format!("{file}: pixels max {max} mean {mean:.3}, tensor max {value_max:.2} levels"));
        if lossy(case) {
            assert!(max <= 10 && mean <= 0.5, "{file}: decoded pixels differ from PIL's by up to {max} (mean {mean:.3})");
            assert!(value_max <= 4.0, "{file}: tensor differs from transformers' by {value_max:.2} levels");
        } else {
            assert_eq!(max, 0, "{file}: decoded pixels differ from PIL's by up to {max} (mean {mean:.3})");
            // Resizing in fixed point on both sides: one level at most.
            assert!(value_max <= 1.0 + 1e-3, "{file}: tensor differs from transformers' by {value_max:.2} levels");
        }
    }
    println!("{}", report.join("\n"));
}
