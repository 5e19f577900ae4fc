//! A loaded CLIP checkpoint: both towers, tokenizer, preprocessing settings, and the cache of
//! class text embeddings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use super::config::ClipConfig;
use super::device::DeviceSpec;
use super::norm_params::NormParams;
use super::ops::Grad;
use super::preprocessor::PreprocessorConfig;
use super::prompts::render_prompts;
use super::text::TextTower;
use super::tokenizer::ClipTokenizer;
use super::vision::{l2_normalize, VisionTower};
use super::weights::SafetensorsFile;
use crate::error::{Error, Result};

/// How to load a checkpoint.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the model runs.
    pub device: DeviceSpec,
    /// Compute dtype; weights stored as f16/bf16/f32 are converted to it. f32 unless checking
    /// gradients in f64.
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { device: DeviceSpec::Cpu, dtype: DType::F32 }
    }
}

type PromptKey = (Vec<String>, Vec<String>);

/// A CLIP model loaded from a directory in the Hugging Face layout.
#[derive(Debug)]
pub struct ClipModel {
    dir: PathBuf,
    config: ClipConfig,
    preprocessor: PreprocessorConfig,
    tokenizer: ClipTokenizer,
    vision: VisionTower,
    text: TextTower,
    logit_scale: f64,
    device: Device,
    content_hash: String,
    class_cache: Mutex<HashMap<PromptKey, Tensor>>,
}

impl Drop for ClipModel {
    fn drop(&mut self) {
        // The weights are freed after this, on whichever thread drops the last handle (a cache
        // eviction on a tokio worker); see `bind_to_thread`.
        let _ = super::device::bind_to_thread(&self.device);
    }
}

impl ClipModel {
    /// Loads `config.json`, `model.safetensors`, `tokenizer.json` and (optionally)
    /// `preprocessor_config.json` from `dir`.
    pub fn load(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let content_hash = checkpoint_hash(dir)?;
        Self::load_hashed(dir, options, content_hash)
    }

    /// [`ClipModel::load`] with the [`checkpoint_hash`] already computed (the model cache hashes
    /// first to find out whether it has this content loaded).
    pub(crate) fn load_hashed(dir: &Path, options: &LoadOptions, content_hash: String) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config = ClipConfig::from_file(&config_path)?;
        let preprocessor =
            PreprocessorConfig::from_file_or_default(&dir.join("preprocessor_config.json"), config.vision.image_size)?;
        let tokenizer =
            ClipTokenizer::from_file(&dir.join("tokenizer.json"), config.text.max_position_embeddings)?;
        let device = options.device.open()?;
        let weights_path = dir.join("model.safetensors");
        let file = SafetensorsFile::open(&weights_path, options.dtype, &device)?;
        let root = file.root();
        let vision = VisionTower::new(&config.vision, config.projection_dim, root.clone())?;
        let text = TextTower::new(&config.text, config.projection_dim, root.clone())?;
        let logit_scale = if root.contains("logit_scale") {
            root.get(&[], "logit_scale")?.to_dtype(DType::F64)?.to_scalar::<f64>()?
        } else {
            config.logit_scale_init_value
        }
        .exp();
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            preprocessor,
            tokenizer,
            vision,
            text,
            logit_scale,
            device,
            content_hash,
            class_cache: Mutex::new(HashMap::new()),
        })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The checked `config.json`.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The preprocessing settings.
    pub fn preprocessor(&self) -> &PreprocessorConfig {
        &self.preprocessor
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// The vision tower (frozen weights; LayerNorms come from a [`NormParams`]).
    pub fn vision(&self) -> &VisionTower {
        &self.vision
    }

    /// The text tower.
    pub fn text(&self) -> &TextTower {
        &self.text
    }

    /// CLIP's learned logit scale, `exp(logit_scale)`.
    pub fn logit_scale(&self) -> f64 {
        self.logit_scale
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.text.dtype()
    }

    /// SHA-256 over config.json, model.safetensors and tokenizer.json: identifies the model in
    /// caches and run records.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }

    /// The [`ClipModel::content_hash`] of the checkpoint in `dir`, without loading it (a cluster
    /// records it when planning and every executor checks the model it loads against it).
    pub fn hash_dir(dir: &Path) -> Result<String> {
        checkpoint_hash(dir)
    }

    /// Projected image features `[batch, projection_dim]` (not normalised).
    pub fn image_features(&self, pixels: &Tensor, params: &NormParams, grad: Grad) -> Result<Tensor> {
        self.vision.forward(pixels, params, grad)
    }

    /// Unit-norm image embeddings `[batch, projection_dim]`.
    pub fn image_embeddings(&self, pixels: &Tensor, params: &NormParams, grad: Grad) -> Result<Tensor> {
        Ok(l2_normalize(&self.image_features(pixels, params, grad)?)?)
    }

    /// Projected text features (not normalised) of the given texts.
    pub fn text_features(&self, texts: &[String]) -> Result<Tensor> {
        let ids = texts.iter().map(|t| self.tokenizer.encode(t)).collect::<Result<Vec<_>>>()?;
        self.text.forward(&ids)
    }

    /// Unit-norm class embeddings `[classes, projection_dim]`: for each template, the prompts'
    /// embeddings are normalised; they are averaged over templates and normalised again.
    /// Computed once per (classes, templates) and cached.
    pub fn class_embeddings(&self, classes: &[String], templates: &[String]) -> Result<Tensor> {
        if classes.is_empty() {
            return Err(Error::InvalidInput("the class list is empty".into()));
        }
        if templates.is_empty() {
            return Err(Error::InvalidInput("the template list is empty".into()));
        }
        let key = (classes.to_vec(), templates.to_vec());
        if let Some(t) = self.class_cache.lock().map_err(|_| poisoned())?.get(&key) {
            return Ok(t.clone());
        }
        let mut sum: Option<Tensor> = None;
        for template in templates {
            let prompts = render_prompts(classes, template)?;
            let emb = l2_normalize(&self.text_features(&prompts)?)?;
            sum = Some(match sum {
                None => emb,
                Some(s) => (s + emb)?,
            });
        }
        let sum = sum.ok_or_else(|| Error::InvalidInput("the template list is empty".into()))?;
        let emb = l2_normalize(&sum)?;
        self.class_cache.lock().map_err(|_| poisoned())?.insert(key, emb.clone());
        Ok(emb)
    }
}

fn poisoned() -> Error {
    Error::Internal("the class-embedding cache was poisoned by a panic in another thread".into())
}

/// SHA-256 over a checkpoint's config.json, model.safetensors and tokenizer.json, as
/// [`ClipModel::content_hash`] reports it.
pub fn checkpoint_hash(dir: &Path) -> Result<String> {
    hash_files(&[&dir.join("config.json"), &dir.join("model.safetensors"), &dir.join("tokenizer.json")])
}

pub(crate) fn hash_files(paths: &[&Path]) -> Result<String> {
    let mut hasher = Sha256::new();
    for path in paths {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(*path, e))?;
        std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(*path, e))?;
    }
    Ok(hex::encode(hasher.finalize()))
}
