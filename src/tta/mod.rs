//! Test-time adaptation: zero-shot, TENT and CLIPTTA (closed and open set) as one streaming
//! [`Adapter`] that adapts the vision LayerNorms batch after batch and predicts.
//!
//! The method follows docs/method.md (from the official code, `MarcLafon/cliptta@f4221f4`):
//! soft contrastive loss over the batch's pseudo-captions, marginal-entropy regulariser,
//! class-wise confident memory, Adam; in the open set, log-MCM scores, a per-batch Otsu
//! threshold trained as a scalar, and the OCE loss.
//!
//! ```
//! # fn main() -> cliptta::Result<()> {
//! # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip");
//! use std::sync::Arc;
//! use cliptta::model::{ClipModel, LoadOptions};
//! use cliptta::tta::{Adapter, MethodConfig};
//! let model = Arc::new(ClipModel::load(&dir, &LoadOptions::default())?);
//! let classes = vec!["cat".to_string(), "dog".to_string(), "bird".to_string()];
//! let method = MethodConfig::from_name("cliptta", false)?;
//! let mut adapter = Adapter::new(model.clone(), &classes, &["a photo of a {}".to_string()], method)?;
//! let pixels = candle_core::Tensor::randn(0f32, 1.0, (4, 3, 32, 32), model.device())?;
//! let out = adapter.adapt_and_predict(&pixels)?;
//! assert_eq!(out.labels.len(), 4);
//! assert_eq!(adapter.stats().steps, 10);
//! # Ok(()) }
//! ```

mod adam;
mod adapter;
mod loss;
mod memory;
mod method;
mod ood;
mod prediction;
mod state;

pub use adam::{Adam, AdamConfig};
pub use adapter::{AdaptStats, Adapter};
pub use loss::{marginal_entropy, soft_contrastive_loss, tent_entropy};
pub use memory::ClassMemory;
pub use method::{ClipTtaConfig, Method, MethodConfig, Reset, TentConfig};
pub use ood::{log_mcm_score, oce_loss};
pub use prediction::BatchPrediction;
pub use state::info_path;
