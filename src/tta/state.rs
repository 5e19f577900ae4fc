//! Saving and resuming an adapter: the adapted LayerNorms and the method's tensors (optimiser
//! moments, threshold, memory, caches) go to a safetensors file; the settings, counters and the
//! method's scalars to a JSON file beside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::adapter::Adapter;
use super::methods::{MethodConfig, MethodState};
use super::stats::AdaptStats;
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
    stats: AdaptStats,
    /// The method's scalars (Adam's step count, a sampler's position), beside the fields above
    /// as in earlier files.
    #[serde(flatten)]
    method_state: serde_json::Map<String, serde_json::Value>,
}

/// The settings file that accompanies a state file: `state.safetensors` → `state.json`.
pub fn info_path(path: &Path) -> PathBuf {
    path.with_extension("json")
}

impl Adapter {
    /// Writes the resumable state to `path` (safetensors) and [`info_path`]`(path)` (JSON).
    pub fn save_state(&self, path: &Path) -> Result<()> {
        let mut state = MethodState::default();
        self.method.save(&mut state)?;
        let mut tensors: HashMap<String, Tensor> = self.params.to_named()?;
        for (name, t) in state.tensors {
            if tensors.insert(name.clone(), t).is_some() {
                return Err(Error::Internal(format!("method state tensor `{name}` shadows a LayerNorm")));
            }
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
            method: self.config.clone(),
            stats: self.stats.clone(),
            method_state: state.info,
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
        if info.method != self.config {
            return Err(mismatch("method or hyper-parameters"));
        }
        let device = self.model.device().clone();
        let tensors = candle_core::safetensors::load(path, &device)
            .map_err(|e| Error::Weights { path: path.to_path_buf(), message: e.to_string() })?;
        self.params.load_named(&tensors)?;
        self.method.load(&MethodState { tensors, info: info.method_state }, &json_path)?;
        self.stats = info.stats;
        Ok(())
    }
}
