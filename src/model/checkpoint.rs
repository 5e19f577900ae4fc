//! Writing checkpoints in the Hugging Face CLIP layout: for models this project makes itself
//! (random ones for tests and benchmarks, trained ones for the embedded default).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::config::ClipConfig;
use super::preprocessor::PreprocessorConfig;
use crate::error::{Error, Result};

/// Start-of-text token of CLIP tokenizers.
pub const START_OF_TEXT: &str = "<|startoftext|>";
/// End-of-text token of CLIP tokenizers.
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// Unknown-word token of the word-level tokenizers made here.
pub const UNKNOWN: &str = "<|unk|>";

/// A word-level `tokenizer.json` (lower-casing, split on whitespace and punctuation, start and
/// end tokens) over `words`. Ids: unknown = 0, then the words in order, then start-of-text, and
/// end-of-text last, so that it is the highest id as in OpenAI's vocabulary.
pub fn word_level_tokenizer_json(words: &[String]) -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    vocab.insert(UNKNOWN.into(), json!(0));
    for w in words {
        let w = w.to_lowercase();
        if !vocab.contains_key(&w) {
            let id = vocab.len();
            vocab.insert(w, json!(id));
        }
    }
    let sot = vocab.len();
    let eot = sot + 1;
    vocab.insert(START_OF_TEXT.into(), json!(sot));
    vocab.insert(END_OF_TEXT.into(), json!(eot));
    let added = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let special = |name: &str, id: usize| json!({"id": name, "ids": [id], "tokens": [name]});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [added(0, UNKNOWN), added(sot, START_OF_TEXT), added(eot, END_OF_TEXT)],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": START_OF_TEXT, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": END_OF_TEXT, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": START_OF_TEXT, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": END_OF_TEXT, "type_id": 0}}],
            "special_tokens": {START_OF_TEXT: special(START_OF_TEXT, sot), END_OF_TEXT: special(END_OF_TEXT, eot)}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNKNOWN}
    })
}

/// The vocabulary size of a tokenizer made by [`word_level_tokenizer_json`].
pub fn word_level_vocab_size(tokenizer: &serde_json::Value) -> usize {
    tokenizer["model"]["vocab"].as_object().map_or(0, |v| v.len())
}

/// Names and shapes of every tensor of a CLIP checkpoint with this configuration.
pub fn tensor_shapes(cfg: &ClipConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let v = &cfg.vision;
    let t = &cfg.text;
    let mut block = |prefix: &str, d: usize, hidden: usize| {
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            out.push((format!("{prefix}.self_attn.{proj}.weight"), vec![d, d]));
            out.push((format!("{prefix}.self_attn.{proj}.bias"), vec![d]));
        }
        out.push((format!("{prefix}.mlp.fc1.weight"), vec![hidden, d]));
        out.push((format!("{prefix}.mlp.fc1.bias"), vec![hidden]));
        out.push((format!("{prefix}.mlp.fc2.weight"), vec![d, hidden]));
        out.push((format!("{prefix}.mlp.fc2.bias"), vec![d]));
        for ln in ["layer_norm1", "layer_norm2"] {
            out.push((format!("{prefix}.{ln}.weight"), vec![d]));
            out.push((format!("{prefix}.{ln}.bias"), vec![d]));
        }
    };
    for i in 0..v.num_hidden_layers {
        block(&format!("vision_model.encoder.layers.{i}"), v.hidden_size, v.intermediate_size);
    }
    for i in 0..t.num_hidden_layers {
        block(&format!("text_model.encoder.layers.{i}"), t.hidden_size, t.intermediate_size);
    }
    let (d, p, c) = (v.hidden_size, v.patch_size, v.num_channels);
    out.push(("vision_model.embeddings.class_embedding".into(), vec![d]));
    out.push(("vision_model.embeddings.patch_embedding.weight".into(), vec![d, c, p, p]));
    out.push(("vision_model.embeddings.position_embedding.weight".into(), vec![v.num_positions(), d]));
    for ln in ["pre_layrnorm", "post_layernorm"] {
        out.push((format!("vision_model.{ln}.weight"), vec![d]));
        out.push((format!("vision_model.{ln}.bias"), vec![d]));
    }
    out.push(("visual_projection.weight".into(), vec![cfg.projection_dim, d]));
    out.push(("text_model.embeddings.token_embedding.weight".into(), vec![t.vocab_size, t.hidden_size]));
    out.push(("text_model.embeddings.position_embedding.weight".into(), vec![t.max_position_embeddings, t.hidden_size]));
    out.push(("text_model.final_layer_norm.weight".into(), vec![t.hidden_size]));
    out.push(("text_model.final_layer_norm.bias".into(), vec![t.hidden_size]));
    out.push(("text_projection.weight".into(), vec![cfg.projection_dim, t.hidden_size]));
    out.push(("logit_scale".into(), vec![]));
    out
}

/// Random weights for `cfg`, reproducible from `seed`, with transformers' `CLIPModel`
/// initialisation (`initializer_factor` 1): attention and MLP weights scaled by width and depth,
/// class and projection weights by `width^-0.5`, embeddings 0.02 (0.01 for text positions),
/// LayerNorms at weight 1 and bias 0, biases 0, logit scale from the config.
pub fn random_weights(cfg: &ClipConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = HashMap::new();
    for (name, shape) in tensor_shapes(cfg) {
        let n: usize = shape.iter().product();
        let is_norm = name.contains("layer_norm") || name.contains("layrnorm") || name.contains("layernorm");
        let values: Vec<f32> = if name == "logit_scale" {
            vec![cfg.logit_scale_init_value as f32]
        } else if is_norm && name.ends_with(".weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            let std = init_std(cfg, &name) as f32;
            (0..n).map(|_| std * standard_normal(&mut rng)).collect()
        };
        out.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    Ok(out)
}

/// The standard deviation transformers' `CLIPPreTrainedModel._init_weights` gives `name`.
fn init_std(cfg: &ClipConfig, name: &str) -> f64 {
    let vision = name.starts_with("vision_model");
    let (width, layers) = if vision {
        (cfg.vision.hidden_size as f64, cfg.vision.num_hidden_layers as f64)
    } else {
        (cfg.text.hidden_size as f64, cfg.text.num_hidden_layers as f64)
    };
    let depth = (2.0 * layers.max(1.0)).powf(-0.5);
    if name.ends_with("class_embedding") {
        width.powf(-0.5)
    } else if name == "visual_projection.weight" {
        (cfg.vision.hidden_size as f64).powf(-0.5)
    } else if name == "text_projection.weight" {
        (cfg.text.hidden_size as f64).powf(-0.5)
    } else if name.contains("self_attn.out_proj") {
        width.powf(-0.5) * depth
    } else if name.contains("self_attn.") {
        width.powf(-0.5) * depth
    } else if name.contains("mlp.fc1") {
        (2.0 * width).powf(-0.5)
    } else if name.contains("mlp.fc2") {
        width.powf(-0.5) * depth
    } else if name == "text_model.embeddings.position_embedding.weight" {
        0.01
    } else {
        0.02
    }
}

fn standard_normal(rng: &mut impl Rng) -> f32 {
    // Box-Muller; `1 - u` keeps the logarithm's argument in (0, 1].
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Writes `config.json`, `model.safetensors` (f32), `tokenizer.json` and
/// `preprocessor_config.json` into `dir` (created if needed).
pub fn write_checkpoint(
    dir: &Path,
    cfg: &ClipConfig,
    tensors: &HashMap<String, Tensor>,
    tokenizer: &serde_json::Value,
    preprocessor: &PreprocessorConfig,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let write_json = |name: &str, value: &serde_json::Value| -> Result<()> {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(value).map_err(|source| Error::Json { path: path.clone(), source })?;
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
    };
    write_json("config.json", &cfg.to_hf_json())?;
    write_json("tokenizer.json", tokenizer)?;
    write_json("preprocessor_config.json", &preprocessor.to_hf_json())?;
    let f32_tensors = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&f32_tensors, &path)
        .map_err(|e| Error::Weights { path: path.clone(), message: e.to_string() })
}

/// A random checkpoint of `cfg` with a word-level tokenizer over `words`, written to `dir`.
/// The config's text vocabulary size is set to the tokenizer's.
pub fn write_random_checkpoint(dir: &Path, cfg: &ClipConfig, words: &[String], seed: u64) -> Result<ClipConfig> {
    let tokenizer = word_level_tokenizer_json(words);
    let mut cfg = cfg.clone();
    cfg.text.vocab_size = word_level_vocab_size(&tokenizer);
    cfg.text.eos_token_id = (cfg.text.vocab_size - 1) as u32;
    let tensors = random_weights(&cfg, seed)?;
    write_checkpoint(dir, &cfg, &tensors, &tokenizer, &PreprocessorConfig::clip_default(cfg.vision.image_size))?;
    Ok(cfg)
}
