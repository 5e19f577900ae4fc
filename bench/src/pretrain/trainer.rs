//! The pretraining loop.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::captions::CaptionSet;
use super::loss::soft_target_clip_loss;
use crate::error::{Error, Result};
use cliptta::model::{
    l2_normalize, random_weights, towers_from_tensors, word_level_tokenizer_json, word_level_vocab_size, write_checkpoint,
    ClipConfig, ClipTokenizer, Grad, PreprocessorConfig,
};

/// Grayscale training images with labels.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    /// `n * side * side` pixel values, row-major per image.
    pub pixels: Vec<u8>,
    /// Class index per image.
    pub labels: Vec<u8>,
    /// Image side length.
    pub side: usize,
}

impl TrainingSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Pretraining settings.
#[derive(Debug, Clone)]
pub struct PretrainConfig {
    /// Model shape (text vocabulary size and end token are set from the built tokenizer).
    pub clip: ClipConfig,
    /// Preprocessing saved with the model and used to feed training images.
    pub preprocessor: PreprocessorConfig,
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate (AdamW, linear warm-up then cosine decay).
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Fraction of steps spent warming up.
    pub warmup_fraction: f64,
    /// Seed for weights, shuffling and caption sampling.
    pub seed: u64,
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct PretrainReport {
    /// Mean loss per epoch.
    pub epoch_losses: Vec<f32>,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Wall-clock seconds of the loop.
    pub seconds: f64,
    /// The configuration saved (with the tokenizer's vocabulary size).
    pub clip: ClipConfig,
}

/// Trains a CLIP on `data` with captions from `captions`, writes it to `out_dir` in the Hugging
/// Face layout, and calls `on_step(epoch, step, loss)` after every step.
pub fn train(
    cfg: &PretrainConfig,
    data: &TrainingSet,
    captions: &CaptionSet,
    out_dir: &Path,
    mut on_step: impl FnMut(usize, usize, f32),
) -> Result<PretrainReport> {
    if data.len() < cfg.batch_size || cfg.batch_size < 2 {
        return Err(Error::InvalidInput(format!("{} images cannot fill batches of {}", data.len(), cfg.batch_size)));
    }
    let side = cfg.clip.vision.image_size;
    if data.side != side || cfg.preprocessor.crop_size != side {
        return Err(Error::InvalidInput(format!("images are {}px, the model takes {side}px", data.side)));
    }
    let tokenizer_json = word_level_tokenizer_json(&captions.vocabulary());
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let tokenizer_path = out_dir.join("tokenizer.json");
    std::fs::write(&tokenizer_path, tokenizer_json.to_string()).map_err(|e| Error::io(&tokenizer_path, e))?;
    let mut clip = cfg.clip.clone();
    clip.text.vocab_size = word_level_vocab_size(&tokenizer_json);
    clip.text.eos_token_id = (clip.text.vocab_size - 1) as u32;
    let tokenizer = ClipTokenizer::from_file(&tokenizer_path, clip.text.max_position_embeddings)?;

    let device = Device::Cpu;
    let mut vars: HashMap<String, Var> = HashMap::new();
    for (name, t) in random_weights(&clip, cfg.seed)? {
        vars.insert(name, Var::from_tensor(&t.to_device(&device)?)?);
    }
    let tensors: HashMap<String, Tensor> = vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    let tensors_label = out_dir.join("<training>");
    let logit_scale = vars.get("logit_scale").ok_or_else(|| Error::InvalidInput("no logit_scale".into()))?.clone();
    let params = ParamsAdamW { lr: cfg.lr, beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: cfg.weight_decay };
    let mut opt = AdamW::new(vars.values().cloned().collect(), params)?;

    let steps_per_epoch = data.len() / cfg.batch_size;
    let total_steps = steps_per_epoch * cfg.epochs;
    let warmup = ((total_steps as f64 * cfg.warmup_fraction) as usize).max(1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let started = Instant::now();
    let mut epoch_losses = Vec::new();
    let mut step = 0;
    let plane = side * side;
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let mut sum = 0f64;
        for chunk in order.chunks_exact(cfg.batch_size) {
            let lr = if step < warmup {
                cfg.lr * (step + 1) as f64 / warmup as f64
            } else {
                let progress = (step - warmup) as f64 / (total_steps - warmup).max(1) as f64;
                cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            };
            opt.set_learning_rate(lr);
            let mut pixels = Vec::with_capacity(chunk.len() * 3 * plane);
            let mut labels = Vec::with_capacity(chunk.len());
            let mut ids = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let img = &data.pixels[i * plane..(i + 1) * plane];
                for c in 0..3 {
                    let (mean, std) = (cfg.preprocessor.mean[c], cfg.preprocessor.std[c]);
                    pixels.extend(img.iter().map(|&p| (p as f32 * cfg.preprocessor.rescale_factor - mean) / std));
                }
                let label = data.labels[i] as usize;
                labels.push(label as u32);
                ids.push(tokenizer.encode(&captions.sample(label, &mut rng))?);
            }
            let pixels = Tensor::from_vec(pixels, (chunk.len(), 3, side, side), &device)?;
            let (vision, text) = towers_from_tensors(&clip, &tensors, &tensors_label)?;
            let z_img = l2_normalize(&vision.forward(&pixels, &vision.shared_params()?, Grad::Enabled)?)?;
            let z_txt = l2_normalize(&text.forward_with(&ids, Grad::Enabled)?)?;
            let scale = logit_scale.as_tensor().exp()?.minimum(100.0)?;
            let loss = soft_target_clip_loss(&z_img, &z_txt, &labels, &scale)?;
            let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(Error::InvalidInput(format!("pretraining diverged at step {step} (loss {value})")));
            }
            opt.backward_step(&loss)?;
            sum += value as f64;
            on_step(epoch, step, value);
            step += 1;
        }
        epoch_losses.push((sum / steps_per_epoch as f64) as f32);
    }
    let seconds = started.elapsed().as_secs_f64();
    let tensors: HashMap<String, Tensor> = vars.iter().map(|(k, v)| (k.clone(), v.as_detached_tensor())).collect();
    write_checkpoint(out_dir, &clip, &tensors, &tokenizer_json, &cfg.preprocessor)?;
    Ok(PretrainReport { epoch_losses, steps: step, seconds, clip })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cliptta::model::{ClipModel, LoadOptions};

    /// Two classes that differ in brightness: a tiny CLIP learns to tell them apart from captions
    /// alone, and the saved checkpoint loads and classifies zero-shot.
    #[test]
    fn learns_a_separable_toy_task_and_saves_a_loadable_checkpoint() -> Result<()> {
        let side = 8;
        let n = 64;
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let label = (i % 2) as u8;
            labels.push(label);
            pixels.extend((0..side * side).map(|p| if label == 0 { 20 + (p % 7) as u8 } else { 230 - (p % 5) as u8 }));
        }
        let data = TrainingSet { pixels, labels, side };
        let mut clip = ClipConfig::vit_b_32();
        clip.vision.image_size = side;
        clip.vision.patch_size = 4;
        clip.vision.hidden_size = 16;
        clip.vision.intermediate_size = 32;
        clip.vision.num_hidden_layers = 1;
        clip.vision.num_attention_heads = 2;
        clip.text.hidden_size = 16;
        clip.text.intermediate_size = 32;
        clip.text.num_hidden_layers = 1;
        clip.text.num_attention_heads = 2;
        clip.text.max_position_embeddings = 12;
        clip.projection_dim = 8;
        let captions = CaptionSet {
            synonyms: vec![vec!["dark".into(), "black".into()], vec!["bright".into(), "white".into()]],
            templates: vec!["a photo of a {}".into(), "a {} square".into()],
        };
        let cfg = PretrainConfig {
            clip,
            preprocessor: PreprocessorConfig::clip_default(side),
            epochs: 15,
            batch_size: 16,
            lr: 5e-3,
            weight_decay: 0.0,
            warmup_fraction: 0.1,
            seed: 3,
        };
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let report = train(&cfg, &data, &captions, dir.path(), |e, s, l| eprintln!("epoch {e} step {s} loss {l}"))?;
        assert_eq!(report.steps, 15 * 4);
        let (first, last) = (report.epoch_losses[0], *report.epoch_losses.last().unwrap());
        assert!(last < 0.5 * first, "loss {first} -> {last}");
        let model = ClipModel::load(dir.path(), &LoadOptions::default())?;
        let classes = model.class_embeddings(&["dark".into(), "bright".into()], &["a photo of a {}".into()])?;
        let dark = Tensor::full(-1.5f32, (1, 3, side, side), &Device::Cpu)?;
        let bright = Tensor::full(1.8f32, (1, 3, side, side), &Device::Cpu)?;
        let params = model.vision().init_params()?;
        for (pixels, want) in [(dark, 0u32), (bright, 1u32)] {
            let z = model.image_embeddings(&pixels, &params, Grad::Disabled)?;
            let label = z.matmul(&classes.t()?)?.argmax(1)?.to_vec1::<u32>()?[0];
            assert_eq!(label, want);
        }
        Ok(())
    }
}
