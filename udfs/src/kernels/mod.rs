//! The metrics as plain Rust functions over slices, with no DataFusion dependency: what the SQL
//! aggregates compute, for callers that have the values in memory (the adapter's per-batch
//! Otsu threshold, an evaluation program). Built without the `sql` feature, this is the whole
//! crate.

pub mod accuracy;
pub mod auroc;
pub mod ece;
pub mod fpr_at_tpr;
pub mod otsu;
mod ranked;

pub use accuracy::accuracy;
pub use auroc::auroc;
pub use ece::{ece, ECE_DEFAULT_BINS, ECE_MAX_BINS};
pub use fpr_at_tpr::fpr_at_tpr;
pub use otsu::{otsu_threshold, OTSU_BINS};
