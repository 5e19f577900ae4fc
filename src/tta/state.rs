//! Saving and resuming an adapter: the adapted LayerNorms, Adam moments, threshold and memory go
//! to a safetensors file; the settings and counters to a JSON file beside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::adapter::{AdaptStats, Adapter};
use super::method::MethodConfig;
use crate::error::{Error, Result};

const FORMAT_VERSION: u32 = 1;

/// The JSON half of a saved state.
#[derive(Debug, Serialize, Deserialize)]
struct StateInfo {
    format_version: u32,
    model_hash: String,
    classes: Vec<String>,
    templates: Vec<String>,
    method: MethodConfig,
    adam_step: u64,
    /// The memory sampler's position in its stream, as a decimal string (u128).
    rng_word_pos: String,
    stats: AdaptStats,
}

/// The settings file that accompanies a state file: `state.safetensors` → `state.json`.
pub fn info_path(path: &Path) -> PathBuf {
    path.with_extension("json")
}

impl Adapter {
    /// Writes the resumable state to `path` (safetensors) and [`info_path`]`(path)` (JSON).
    pub fn save_state(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = self.params.to_named()?;
        let (m, v) = self.adam.moments();
        for (i, (m, v)) in m.iter().zip(v).enumerate() {
            tensors.insert(format!("adam.m.{i}"), m.clone());
            tensors.insert(format!("adam.v.{i}"), v.clone());
        }
        tensors.insert("alpha".into(), self.alpha.as_tensor().copy()?);
        if let Some((images, labels, conf)) = self.memory.to_tensors()? {
            tensors.insert("memory.images".into(), images);
            tensors.insert("memory.labels".into(), labels);
            tensors.insert("memory.confidence".into(), conf);
        }
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        candle_core::safetensors::save(&tensors, path)
            .map_err(|e| Error::Weights { path: path.to_path_buf(), message: e.to_string() })?;
        let info = StateInfo {
            format_version: FORMAT_VERSION,
            model_hash: self.model.content_hash().to_string(),
            classes: self.classes.clone(),
            templates: self.templates.clone(),
            method: self.method.clone(),
            adam_step: self.adam.step_count(),
            rng_word_pos: self.rng.get_word_pos().to_string(),
            stats: self.stats.clone(),
        };
        let json_path = info_path(path);
        let text = serde_json::to_string_pretty(&info).map_err(|source| Error::Json { path: json_path.clone(), source })?;
        std::fs::write(&json_path, text).map_err(|e| Error::io(&json_path, e))
    }

    /// Restores a state written by [`Adapter::save_state`] for the same model, classes,
    /// templates and method; anything else is an error naming what differs.
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        let json_path = info_path(path);
        let text = std::fs::read_to_string(&json_path).map_err(|e| Error::io(&json_path, e))?;
        let info: StateInfo = serde_json::from_str(&text).map_err(|source| Error::Json { path: json_path.clone(), source })?;
        let mismatch = |what: &str| Error::config(&json_path, format!("saved state was made with a different {what}"));
        if info.format_version != FORMAT_VERSION {
            return Err(mismatch("format version"));
        }
        if info.model_hash != self.model.content_hash() {
            return Err(mismatch("model"));
        }
        if info.classes != self.classes {
            return Err(mismatch("class list"));
        }
        if info.templates != self.templates {
            return Err(mismatch("template list"));
        }
        if info.method != self.method {
            return Err(mismatch("method or hyper-parameters"));
        }
        let device = self.model.device().clone();
        let tensors = candle_core::safetensors::load(path, &device)
            .map_err(|e| Error::Weights { path: path.to_path_buf(), message: e.to_string() })?;
        let get = |name: &str| {
            tensors.get(name).cloned().ok_or_else(|| Error::MissingTensor { path: path.to_path_buf(), name: name.into() })
        };
        self.params.load_named(&tensors)?;
        let count = self.adam.moments().0.len();
        let m = (0..count).map(|i| get(&format!("adam.m.{i}"))).collect::<Result<Vec<_>>>()?;
        let v = (0..count).map(|i| get(&format!("adam.v.{i}"))).collect::<Result<Vec<_>>>()?;
        self.adam.set_state(info.adam_step, m, v)?;
        self.alpha.set(&get("alpha")?.to_dtype(self.alpha.dtype())?)?;
        match (tensors.get("memory.images"), tensors.get("memory.labels"), tensors.get("memory.confidence")) {
            (Some(i), Some(l), Some(c)) => self.memory.load_tensors(&i.to_dtype(self.model.dtype())?, l, c)?,
            _ => self.memory.clear(),
        }
        let word_pos: u128 = info.rng_word_pos.parse().map_err(|_| mismatch("sampler position (unreadable)"))?;
        let seed = match &self.method {
            MethodConfig::Cliptta(c) => c.seed,
            _ => 0,
        };
        self.rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        self.rng.set_word_pos(word_pos);
        self.stats = info.stats;
        Ok(())
    }
}
