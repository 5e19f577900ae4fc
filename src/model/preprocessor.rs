//! `preprocessor_config.json`: how raw images become model input.
//!
//! Mirrors transformers' `CLIPImageProcessor` fields; CLIP's defaults apply when the file or a
//! field is absent.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// OpenAI CLIP's normalisation mean (RGB).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's normalisation standard deviation (RGB).
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// `size` and `crop_size` appear as a number or as an object in different transformers versions.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Square(usize),
    Shortest { shortest_edge: usize },
    HeightWidth { height: usize, width: usize },
}

#[derive(Debug, Clone, Deserialize)]
struct RawPreprocessorConfig {
    size: Option<RawSize>,
    crop_size: Option<RawSize>,
    #[serde(default = "default_true")]
    do_resize: bool,
    #[serde(default = "default_true")]
    do_center_crop: bool,
    #[serde(default = "default_true")]
    do_normalize: bool,
    #[serde(default = "default_true")]
    do_rescale: bool,
    #[serde(default = "default_rescale_factor")]
    rescale_factor: f32,
    image_mean: Option<Vec<f32>>,
    image_std: Option<Vec<f32>>,
}

fn default_true() -> bool {
    true
}
fn default_rescale_factor() -> f32 {
    1.0 / 255.0
}

/// Checked preprocessing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessorConfig {
    /// Resize so that the shorter side has this length (bicubic), if `do_resize`.
    pub shortest_edge: usize,
    /// Whether to resize.
    pub do_resize: bool,
    /// Side of the centre crop; also the model's input size.
    pub crop_size: usize,
    /// Whether to centre-crop.
    pub do_center_crop: bool,
    /// Multiplier from 8-bit values to [0, 1], if `do_rescale`.
    pub rescale_factor: f32,
    /// Whether to rescale.
    pub do_rescale: bool,
    /// Per-channel mean subtracted after rescaling, if `do_normalize`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by, if `do_normalize`.
    pub std: [f32; 3],
    /// Whether to normalise.
    pub do_normalize: bool,
}

impl PreprocessorConfig {
    /// CLIP's defaults for a model with square input `image_size`.
    pub fn clip_default(image_size: usize) -> Self {
        Self {
            shortest_edge: image_size,
            do_resize: true,
            crop_size: image_size,
            do_center_crop: true,
            rescale_factor: 1.0 / 255.0,
            do_rescale: true,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            do_normalize: true,
        }
    }

    /// Reads `preprocessor_config.json`, or returns the defaults when it does not exist.
    pub fn from_file_or_default(path: &Path, image_size: usize) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_json(&text, path, image_size),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::clip_default(image_size)),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Parses and checks the JSON; `path` is used in error messages.
    pub fn from_json(json: &str, path: &Path, image_size: usize) -> Result<Self> {
        let raw: RawPreprocessorConfig =
            serde_json::from_str(json).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
        let side = |s: &RawSize, field: &str| -> Result<usize> {
            match *s {
                RawSize::Square(n) | RawSize::Shortest { shortest_edge: n } => Ok(n),
                RawSize::HeightWidth { height, width } if height == width => Ok(height),
                RawSize::HeightWidth { height, width } => Err(Error::config(
                    path,
                    format!("`{field}` {height}x{width} is not square; only square inputs are supported"),
                )),
            }
        };
        let defaults = Self::clip_default(image_size);
        let shortest_edge = raw.size.as_ref().map(|s| side(s, "size")).transpose()?.unwrap_or(defaults.shortest_edge);
        let crop_size = raw.crop_size.as_ref().map(|s| side(s, "crop_size")).transpose()?.unwrap_or(defaults.crop_size);
        let triple = |v: Option<Vec<f32>>, field: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match v {
                None => Ok(default),
                Some(v) if v.len() == 3 => Ok([v[0], v[1], v[2]]),
                Some(v) if v.len() == 1 => Ok([v[0]; 3]),
                Some(v) => Err(Error::config(path, format!("`{field}` has {} values, expected 3", v.len()))),
            }
        };
        let mean = triple(raw.image_mean, "image_mean", CLIP_MEAN)?;
        let std = triple(raw.image_std, "image_std", CLIP_STD)?;
        if std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
            return Err(Error::config(path, "`image_std` values must be positive"));
        }
        if shortest_edge == 0 || crop_size == 0 {
            return Err(Error::config(path, "`size` and `crop_size` must be positive"));
        }
        let cfg = Self {
            shortest_edge,
            do_resize: raw.do_resize,
            crop_size,
            do_center_crop: raw.do_center_crop,
            rescale_factor: raw.rescale_factor,
            do_rescale: raw.do_rescale,
            mean,
            std,
            do_normalize: raw.do_normalize,
        };
        if cfg.crop_size != image_size {
            return Err(Error::config(
                path,
                format!("crop_size {} differs from the vision tower's image_size {image_size}", cfg.crop_size),
            ));
        }
        Ok(cfg)
    }
}

impl PreprocessorConfig {
    /// This configuration as a transformers `preprocessor_config.json` value.
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": self.do_resize,
            "size": {"shortest_edge": self.shortest_edge},
            "resample": 3,
            "do_center_crop": self.do_center_crop,
            "crop_size": {"height": self.crop_size, "width": self.crop_size},
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": self.mean,
            "image_std": self.std,
            "do_convert_rgb": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_size_forms_parse() {
        let p = Path::new("preprocessor_config.json");
        let a = PreprocessorConfig::from_json(r#"{"size": 224, "crop_size": 224}"#, p, 224).unwrap();
        let b = PreprocessorConfig::from_json(
            r#"{"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224},
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}"#,
            p,
            224,
        )
        .unwrap();
        assert_eq!(a, PreprocessorConfig::clip_default(224));
        assert_eq!(b.mean, [0.5; 3]);
        assert_eq!(b.shortest_edge, 224);
    }

    #[test]
    fn hf_json_round_trips() {
        let mut cfg = PreprocessorConfig::clip_default(28);
        cfg.mean = [0.5; 3];
        let back = PreprocessorConfig::from_json(&cfg.to_hf_json().to_string(), Path::new("p.json"), 28).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn bad_values_name_the_field() {
        let p = Path::new("preprocessor_config.json");
        for (json, needle) in [
            (r#"{"image_std": [0, 1, 1]}"#, "image_std"),
            (r#"{"image_mean": [1, 2]}"#, "image_mean"),
            (r#"{"crop_size": 32}"#, "crop_size 32"),
            (r#"{"crop_size": {"height": 2, "width": 3}}"#, "not square"),
        ] {
            let err = PreprocessorConfig::from_json(json, p, 224).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
