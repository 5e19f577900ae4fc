//! Contrastive pretraining of a small CLIP from scratch, for the embedded default model (no
//! pretrained checkpoint can be downloaded here).
//!
//! Every weight is a `Var`; the towers are rebuilt from them at each step (the build copies a
//! few megabytes and keeps the graph, so gradients reach every weight), trained with a
//! symmetric contrastive loss in which captions of the same class are soft positives, and saved
//! in the Hugging Face layout.

mod captions;
mod loss;
mod trainer;

pub use captions::{CaptionSet, FASHION_TEMPLATES};
pub use loss::soft_target_clip_loss;
pub use trainer::{train, PretrainConfig, PretrainReport, TrainingSet};
