//! Checkpointed labelling: a partition's output committed as Parquet part files, each with the
//! adapter state at that point and the input position, recorded in a manifest, so a killed job
//! continues from its last commit and ends with the same rows as a run that was never stopped.
//!
//! A commit is made after an adaptation batch, when every input row up to the last image of
//! that batch has its output (later rows that already failed go with them): the rows after the
//! commit's position have not reached the adapter, so the restored state and the same input
//! from that position give the same batches. Files are written under a temporary name,
//! flushed to disk and renamed; the manifest is renamed last, so a commit is whole or absent.
//!
//! Layout of a checkpoint directory, per partition `p`:
//!
//! | file | holds |
//! |---|---|
//! | `manifest-p{p}.json` | the job's fingerprint and the list of commits |
//! | `part-p{p}-{seq}.parquet` | the output rows of commit `seq` |
//! | `state-p{p}-{seq}.safetensors` (+ `.json`) | the adapter after commit `seq` (latest only) |
//! | `batches-p{p}-{seq}.parquet` | the diagnostics of commit `seq`'s adaptation batches (`batches.rs`) |
//!
//! `cliptta_batches(dir)` in SQL reads every partition's diagnostics back, in commit order.

mod atomic;
mod batches;
mod checkpoint;
mod manifest;

pub use atomic::{fsync_dir, write_atomically};
pub use batches::{batches_schema, read_batches, row_count, sort_batches, to_record_batch, write_batches, BatchRecord, BATCHES_FILE};
pub use checkpoint::{checkpoint_batches, Checkpoint, Resume};
pub use manifest::{Commit, Manifest, MANIFEST_VERSION};
