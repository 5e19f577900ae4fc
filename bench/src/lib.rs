//! # cliptta-bench
//!
//! What the benchmarks, the demo lake and the embedded default model are made from, kept out of
//! the product library (unpublished):
//!
//! - [`data`]: the real datasets behind the embedded default (Fashion-MNIST, MNIST digits as
//!   out-of-distribution images), the 15 corruptions of the -C benchmarks, and the lake writer.
//! - [`pretrain`]: contrastive training of a small CLIP from scratch (the embedded default).
//!
//! Its programs are in `bench/examples/`: `shift_benchmark`, `bench_model`, `bench_lake`,
//! `matmul_peak`, `gpu_agreement`, `pretrain`, `make_lake`
//! (`cargo run --release -p cliptta-bench --example <name> -- --help`).

pub mod data;
pub mod error;
pub mod pretrain;

pub use error::{Error, Result};
