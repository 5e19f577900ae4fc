//! Towers built from in-memory tensors, for training a CLIP from scratch (the embedded default
//! model's pretraining lives in the unpublished `cliptta-bench` crate).
//!
//! When the tensors are `Var`s, every block built from them keeps them in the graph, so a
//! backward pass reaches every weight; inference loads from `model.safetensors` instead.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use super::weights::TensorMap;
use super::{ClipConfig, TextTower, VisionTower};
use crate::error::Result;

/// Both towers of `clip` built from `tensors` (Hugging Face names). `label` names the tensors in
/// error messages (a missing or misshapen tensor names it and this label).
pub fn towers_from_tensors(clip: &ClipConfig, tensors: &HashMap<String, Tensor>, label: &Path) -> Result<(VisionTower, TextTower)> {
    let map = TensorMap { label: label.to_path_buf(), tensors: tensors.clone() };
    let vision = VisionTower::new(&clip.vision, clip.projection_dim, map.root())?;
    let text = TextTower::new(&clip.text, clip.projection_dim, map.root())?;
    Ok((vision, text))
}
