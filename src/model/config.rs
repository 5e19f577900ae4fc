//! `config.json` of a Hugging Face CLIP checkpoint.
//!
//! Field names are the JSON keys; defaults are those of transformers' `CLIPTextConfig`,
//! `CLIPVisionConfig` and `CLIPConfig`
//! (<https://github.com/huggingface/transformers/blob/v4.46.0/src/transformers/models/clip/configuration_clip.py>).
//! The raw JSON is resolved once into a checked [`ClipConfig`] by [`ClipConfig::from_file`].

use std::path::Path;

use serde::Deserialize;

use super::activation::Activation;
use crate::error::{Error, Result};

/// The raw `text_config` object.
#[derive(Debug, Clone, Deserialize)]
struct RawTextConfig {
    #[serde(default = "default_text_vocab_size")]
    vocab_size: usize,
    #[serde(default = "default_text_hidden_size")]
    hidden_size: usize,
    #[serde(default = "default_text_intermediate_size")]
    intermediate_size: usize,
    #[serde(default = "default_text_num_hidden_layers")]
    num_hidden_layers: usize,
    #[serde(default = "default_text_num_attention_heads")]
    num_attention_heads: usize,
    #[serde(default = "default_text_max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_text_eos_token_id")]
    eos_token_id: u32,
}

fn default_text_vocab_size() -> usize {
    49408
}
fn default_text_hidden_size() -> usize {
    512
}
fn default_text_intermediate_size() -> usize {
    2048
}
fn default_text_num_hidden_layers() -> usize {
    12
}
fn default_text_num_attention_heads() -> usize {
    8
}
fn default_text_max_position_embeddings() -> usize {
    77
}
fn default_text_eos_token_id() -> u32 {
    49407
}
fn default_hidden_act() -> String {
    "quick_gelu".to_string()
}
fn default_layer_norm_eps() -> f64 {
    1e-5
}

/// The raw `vision_config` object.
#[derive(Debug, Clone, Deserialize)]
struct RawVisionConfig {
    #[serde(default = "default_vision_hidden_size")]
    hidden_size: usize,
    #[serde(default = "default_vision_intermediate_size")]
    intermediate_size: usize,
    #[serde(default = "default_vision_num_hidden_layers")]
    num_hidden_layers: usize,
    #[serde(default = "default_vision_num_attention_heads")]
    num_attention_heads: usize,
    #[serde(default = "default_vision_num_channels")]
    num_channels: usize,
    #[serde(default = "default_vision_image_size")]
    image_size: usize,
    #[serde(default = "default_vision_patch_size")]
    patch_size: usize,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
}

fn default_vision_hidden_size() -> usize {
    768
}
fn default_vision_intermediate_size() -> usize {
    3072
}
fn default_vision_num_hidden_layers() -> usize {
    12
}
fn default_vision_num_attention_heads() -> usize {
    12
}
fn default_vision_num_channels() -> usize {
    3
}
fn default_vision_image_size() -> usize {
    224
}
fn default_vision_patch_size() -> usize {
    32
}

/// The raw top-level `CLIPConfig`.
#[derive(Debug, Clone, Deserialize)]
struct RawClipConfig {
    text_config: Option<RawTextConfig>,
    /// Checkpoints saved by old transformers versions carry the sub-configs under `*_dict`.
    text_config_dict: Option<RawTextConfig>,
    vision_config: Option<RawVisionConfig>,
    vision_config_dict: Option<RawVisionConfig>,
    #[serde(default = "default_projection_dim")]
    projection_dim: usize,
    #[serde(default = "default_logit_scale_init_value")]
    logit_scale_init_value: f64,
}

fn default_projection_dim() -> usize {
    512
}
fn default_logit_scale_init_value() -> f64 {
    2.6592
}

/// Checked configuration of the text tower.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Number of token embeddings.
    pub vocab_size: usize,
    /// Width of the transformer.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of residual blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// Context length (number of position embeddings).
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub activation: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// End-of-text token id; the text feature is read at its position. The legacy value 2 means
    /// "the position of the highest token id", as in transformers.
    pub eos_token_id: u32,
}

/// Checked configuration of the vision tower.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Width of the transformer.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of residual blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// Input channels (3 for RGB).
    pub num_channels: usize,
    /// Input resolution (square).
    pub image_size: usize,
    /// Side of a square patch.
    pub patch_size: usize,
    /// MLP activation.
    pub activation: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Patches per image side.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per image: all patches plus the class token.
    pub fn num_positions(&self) -> usize {
        self.patches_per_side() * self.patches_per_side() + 1
    }

    /// Number of adaptable LayerNorms: pre, two per block, post.
    pub fn num_layer_norms(&self) -> usize {
        2 * self.num_hidden_layers + 2
    }
}

/// Checked CLIP configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// Text tower.
    pub text: TextConfig,
    /// Vision tower.
    pub vision: VisionConfig,
    /// Dimension of the shared image-text embedding space.
    pub projection_dim: usize,
    /// Initial value of log(logit scale); used when the checkpoint lacks `logit_scale`.
    pub logit_scale_init_value: f64,
}

impl ClipConfig {
    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses and checks `config.json` text; `path` is only used in error messages.
    pub fn from_json(json: &str, path: &Path) -> Result<Self> {
        let raw: RawClipConfig = serde_json::from_str(json)
            .map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
        raw.into_config(path)
    }
}

impl RawClipConfig {
    fn into_config(self, path: &Path) -> Result<ClipConfig> {
        let text = self
            .text_config
            .or(self.text_config_dict)
            .ok_or_else(|| Error::config(path, "missing `text_config`"))?;
        let vision = self
            .vision_config
            .or(self.vision_config_dict)
            .ok_or_else(|| Error::config(path, "missing `vision_config`"))?;
        let text = TextConfig {
            vocab_size: positive(path, "text_config.vocab_size", text.vocab_size)?,
            hidden_size: positive(path, "text_config.hidden_size", text.hidden_size)?,
            intermediate_size: positive(path, "text_config.intermediate_size", text.intermediate_size)?,
            num_hidden_layers: text.num_hidden_layers,
            num_attention_heads: positive(path, "text_config.num_attention_heads", text.num_attention_heads)?,
            max_position_embeddings: positive(
                path,
                "text_config.max_position_embeddings",
                text.max_position_embeddings,
            )?,
            activation: Activation::from_hf_name(&text.hidden_act)
                .ok_or_else(|| Error::config(path, format!("text_config.hidden_act `{}` is not supported", text.hidden_act)))?,
            layer_norm_eps: text.layer_norm_eps,
            eos_token_id: text.eos_token_id,
        };
        if text.hidden_size % text.num_attention_heads != 0 {
            return Err(Error::config(
                path,
                format!(
                    "text_config.hidden_size {} is not divisible by num_attention_heads {}",
                    text.hidden_size, text.num_attention_heads
                ),
            ));
        }
        let vision = VisionConfig {
            hidden_size: positive(path, "vision_config.hidden_size", vision.hidden_size)?,
            intermediate_size: positive(path, "vision_config.intermediate_size", vision.intermediate_size)?,
            num_hidden_layers: vision.num_hidden_layers,
            num_attention_heads: positive(path, "vision_config.num_attention_heads", vision.num_attention_heads)?,
            num_channels: positive(path, "vision_config.num_channels", vision.num_channels)?,
            image_size: positive(path, "vision_config.image_size", vision.image_size)?,
            patch_size: positive(path, "vision_config.patch_size", vision.patch_size)?,
            activation: Activation::from_hf_name(&vision.hidden_act).ok_or_else(|| {
                Error::config(path, format!("vision_config.hidden_act `{}` is not supported", vision.hidden_act))
            })?,
            layer_norm_eps: vision.layer_norm_eps,
        };
        if vision.hidden_size % vision.num_attention_heads != 0 {
            return Err(Error::config(
                path,
                format!(
                    "vision_config.hidden_size {} is not divisible by num_attention_heads {}",
                    vision.hidden_size, vision.num_attention_heads
                ),
            ));
        }
        if vision.image_size % vision.patch_size != 0 {
            return Err(Error::config(
                path,
                format!(
                    "vision_config.image_size {} is not a multiple of patch_size {}",
                    vision.image_size, vision.patch_size
                ),
            ));
        }
        Ok(ClipConfig {
            text,
            vision,
            projection_dim: positive(path, "projection_dim", self.projection_dim)?,
            logit_scale_init_value: self.logit_scale_init_value,
        })
    }
}

fn positive(path: &Path, field: &str, value: usize) -> Result<usize> {
    if value == 0 {
        Err(Error::config(path, format!("`{field}` must be positive")))
    } else {
        Ok(value)
    }
}

impl ClipConfig {
    /// OpenAI CLIP ViT-B/32's shapes (the transformers defaults).
    pub fn vit_b_32() -> Self {
        let json = r#"{"text_config": {}, "vision_config": {}}"#;
        Self::from_json(json, Path::new("<vit-b/32 preset>")).expect("the built-in preset is valid")
    }

    /// OpenAI CLIP ViT-B/16's shapes.
    pub fn vit_b_16() -> Self {
        let mut cfg = Self::vit_b_32();
        cfg.vision.patch_size = 16;
        cfg
    }

    /// This configuration as a transformers `config.json` value.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let t = &self.text;
        let v = &self.vision;
        serde_json::json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": self.logit_scale_init_value,
            "torch_dtype": "float32",
            "text_config": {
                "model_type": "clip_text_model",
                "vocab_size": t.vocab_size,
                "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size,
                "num_hidden_layers": t.num_hidden_layers,
                "num_attention_heads": t.num_attention_heads,
                "max_position_embeddings": t.max_position_embeddings,
                "hidden_act": t.activation.hf_name(),
                "layer_norm_eps": t.layer_norm_eps,
                "projection_dim": self.projection_dim,
                "eos_token_id": t.eos_token_id,
                "bos_token_id": t.eos_token_id.saturating_sub(1),
                "pad_token_id": t.eos_token_id,
            },
            "vision_config": {
                "model_type": "clip_vision_model",
                "hidden_size": v.hidden_size,
                "intermediate_size": v.intermediate_size,
                "num_hidden_layers": v.num_hidden_layers,
                "num_attention_heads": v.num_attention_heads,
                "num_channels": v.num_channels,
                "image_size": v.image_size,
                "patch_size": v.patch_size,
                "hidden_act": v.activation.hf_name(),
                "layer_norm_eps": v.layer_norm_eps,
                "projection_dim": self.projection_dim,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ClipConfig> {
        ClipConfig::from_json(json, Path::new("config.json"))
    }

    #[test]
    fn defaults_are_vit_b_32() {
        let cfg = parse(r#"{"text_config": {}, "vision_config": {}}"#).unwrap();
        assert_eq!(cfg.vision.patch_size, 32);
        assert_eq!(cfg.vision.num_positions(), 50);
        assert_eq!(cfg.vision.num_layer_norms(), 26);
        assert_eq!(cfg.text.max_position_embeddings, 77);
        assert_eq!(cfg.text.activation, Activation::QuickGelu);
        assert_eq!(cfg.projection_dim, 512);
    }

    #[test]
    fn hf_json_round_trips() {
        let mut cfg = ClipConfig::vit_b_16();
        cfg.text.activation = Activation::Gelu;
        cfg.vision.layer_norm_eps = 1e-6;
        let back = parse(&cfg.to_hf_json().to_string()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn legacy_dict_keys_are_read() {
        let cfg = parse(r#"{"text_config_dict": {"hidden_size": 64, "num_attention_heads": 4},
                            "vision_config_dict": {"patch_size": 16}}"#)
        .unwrap();
        assert_eq!(cfg.text.hidden_size, 64);
        assert_eq!(cfg.vision.patch_size, 16);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"vision_config": {}}"#, "missing `text_config`"),
            (r#"{"text_config": {}, "vision_config": {"patch_size": 0}}"#, "vision_config.patch_size"),
            (r#"{"text_config": {}, "vision_config": {"patch_size": 30}}"#, "not a multiple of patch_size"),
            (r#"{"text_config": {"hidden_act": "swish7"}, "vision_config": {}}"#, "swish7"),
            (r#"{"text_config": {"hidden_size": 10}, "vision_config": {}}"#, "not divisible"),
            (r#"{"text_config": {"hidden_size": "big"}, "vision_config": {}}"#, "invalid JSON"),
        ];
        for (json, needle) in cases {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
            assert!(err.contains("config.json"), "{json}: {err}");
        }
    }
}
