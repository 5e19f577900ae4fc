//! CLIP in candle, loaded from Hugging Face checkpoints, with an adaptable vision tower.
//!
//! The frozen weights of both towers are plain tensors, shared by every user of a [`ClipModel`];
//! the vision LayerNorm weights and biases live apart in [`NormParams`], one set per adapting
//! stream, so several streams can adapt independently on one loaded model.
//!
//! ```
//! # fn main() -> cliptta::Result<()> {
//! # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip");
//! use cliptta::model::{ClipModel, Grad, LoadOptions};
//! let model = ClipModel::load(&dir, &LoadOptions::default())?;
//! let classes = model.class_embeddings(&["cat".into(), "dog".into()], &["a photo of a {}".into()])?;
//! let params = model.vision().init_params()?;
//! let size = model.preprocessor().crop_size;
//! let pixels = candle_core::Tensor::zeros((2, 3, size, size), candle_core::DType::F32, model.device())?;
//! let z = model.image_features(&pixels, &params, Grad::Disabled)?;
//! assert_eq!(z.dims(), &[2, model.config().projection_dim]);
//! assert_eq!(classes.dims(), &[2, model.config().projection_dim]);
//! # Ok(()) }
//! ```

mod activation;
mod cache;
pub(crate) mod checkpoint;
mod clip;
mod config;
mod dense;
mod device;
mod fast_exp;
mod fused;
mod fused_attention;
mod fused_block;
#[cfg(feature = "cuda")]
mod fused_cuda;
mod layers;
mod norm_params;
pub(crate) mod ops;
mod preprocessor;
mod prompts;
mod text;
mod tokenizer;
mod training;
mod vision;
pub(crate) mod weights;

pub use activation::Activation;
pub use cache::{cached_model_count, load_cached};
pub use checkpoint::{
    random_weights, tensor_shapes, word_level_tokenizer_json, word_level_vocab_size, write_checkpoint, write_random_checkpoint, END_OF_TEXT,
    START_OF_TEXT,
};
pub use clip::{checkpoint_hash, ClipModel, LoadOptions};
pub use config::{ClipConfig, TextConfig, VisionConfig};
pub use device::{bind_to_thread, parse_device, DeviceSpec};
pub use norm_params::{NormParams, NormSnapshot};
pub use ops::{differentiable_layer_norm, differentiable_log_softmax, differentiable_softmax, Grad};
pub use preprocessor::PreprocessorConfig;
pub use prompts::{render_prompts, DEFAULT_TEMPLATE};
pub use text::TextTower;
pub use tokenizer::ClipTokenizer;
pub use vision::VisionTower;
pub use training::towers_from_tensors;
pub use vision::l2_normalize;
