//! Test-time adaptation: one streaming [`Adapter`] that runs a method batch after batch and
//! predicts. The methods live in `methods/`, one file each behind [`TtaMethod`]: zero-shot,
//! TENT and CLIPTTA (closed and open set), which adapt the vision LayerNorms, and TDA, which
//! keeps caches of image embeddings.
//!
//! CLIPTTA follows docs/method.md (from the official code, `MarcLafon/cliptta@f4221f4`):
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
//! let mut method = MethodConfig::from_name("cliptta", false)?;
//! method.set("num_shots", "8")?;
//! let mut adapter = Adapter::new(model.clone(), &classes, &["a photo of a {}".to_string()], method)?;
//! let pixels = candle_core::Tensor::randn(0f32, 1.0, (4, 3, 32, 32), model.device())?;
//! let out = adapter.adapt_and_predict(&pixels)?;
//! assert_eq!(out.labels.len(), 4);
//! assert_eq!(adapter.stats().steps, 10);
//! # Ok(()) }
//! ```

mod adam;
mod adapter;
mod diagnostics;
mod gmm;
mod guard;
mod loss;
mod memory;
mod methods;
mod ood;
mod prediction;
mod reset;
mod state;
mod stats;

pub use adam::{Adam, AdamConfig};
pub use adapter::Adapter;
pub use gmm::{fit_two_gaussians, Mixture};
pub use diagnostics::{prediction_entropies, relative_distance, BatchDiagnostics};
pub use guard::{Guard, GuardAction, GuardConfig, GuardEvent, GuardTrigger};
pub use loss::{marginal_entropy, row_entropies, soft_contrastive_loss, tent_entropy, LossSum, LossTerm, StepLoss};
pub use memory::ClassMemory;
pub use methods::{
    AdaptContext, BuildContext, CacheUpdate, ClipTtaConfig, SarConfig, SarOptimizer, SarStep, Method, MethodConfig, MethodSettings, MethodState, Setting,
    TdaCaches, TdaConfig, TdaEntry, TdaStep, TentConfig, TtaMethod, UniEntConfig, UniEntWeights, ZeroShotConfig, unient_loss,
    unient_weights,
};
pub use ood::{log_mcm_score, oce_loss};
pub use prediction::BatchPrediction;
pub use reset::Reset;
pub use state::info_path;
pub use stats::AdaptStats;
