//! # cliptta
//!
//! CLIP zero-shot image labelling that keeps adapting while it runs (CLIPTTA, Lafon et al.,
//! NeurIPS 2025), packaged as a plugin for Apache DataFusion.
//!
//! The crate is layered; each layer only uses the ones above it:
//!
//! - [`model`]: CLIP in candle. Loads Hugging Face checkpoints (`config.json`,
//!   `model.safetensors`, `tokenizer.json`, `preprocessor_config.json`), encodes class prompts
//!   once, and runs a vision tower whose LayerNorm weights and biases are the only trainable
//!   tensors ([`model::NormParams`]).
//! - [`image`]: decoding and CLIP preprocessing of raw image bytes.
//! - [`tta`]: the [`tta::Adapter`] that runs zero-shot, TENT or CLIPTTA (closed or open set)
//!   over a stream of batches.
//! - [`source`]: object-store locations with globs, stores from the environment, listing in a
//!   seeded order, fetches with timeouts and retries, model URLs cached locally, and the
//!   embedded default model ([`source::default_model_dir`]).
//! - [`job`]: checkpoints of a labelling job (part files, adapter state, manifest) for exact
//!   resume.
//! - [`sql`]: DataFusion: the `cliptta(...)` / `cliptta_table(...)` table functions,
//!   `ClipTtaExec` and [`sql::adapt_stream`] for Arrow record batch streams.
//! - `cluster` (feature `ballista`): Ballista codecs and processes for running that SQL on a
//!   cluster.
//!
//! ## Memory
//! Activation buffers are large and short-lived. The `cliptta` command and the examples call
//! [`allocator::retain_freed_memory`] at start so each batch reuses the previous one's pages; a
//! program embedding the crate may do the same (it is process-wide, so the library never does).
//!
//! ## Threading
//! Model work is synchronous and CPU-bound (candle uses its own thread pool for matrix products).
//! In the SQL layer, fetches are async (bounded by `concurrency`), decoding/preprocessing and
//! adaptation run on Tokio's blocking pool, and each partition is one adapting stream.
//!
//! ## Features
//! - `cli` (default): the `cliptta` command and its dependencies (clap, indicatif,
//!   tracing-subscriber). Library users can turn it off with `default-features = false`.
//! - `cuda`: candle's CUDA backend, selected at run time with device `cuda` or `cuda:N`. It needs
//!   the CUDA toolkit to build.
//! - `ballista`: [`cluster`], the same SQL on an Apache Ballista scheduler and executors (codecs,
//!   process starters, client session).

pub mod allocator;
#[cfg(feature = "ballista")]
pub mod cluster;
pub mod error;
pub mod image;
pub mod job;
pub mod model;
pub mod row_status;
pub mod source;
pub mod sql;
pub mod tta;

pub use error::{Error, Result};
pub use row_status::RowStatus;

/// README's Rust example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
