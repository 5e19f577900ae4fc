//! The manifest of one partition's checkpoints.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::atomic::write_atomically;
use crate::error::{Error, Result};

/// Version of the manifest format; a manifest of another version is refused.
pub const MANIFEST_VERSION: u32 = 1;

/// One commit: its part file, the adapter state after it, and where the input stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    /// 0, 1, 2, ... in order.
    pub seq: u64,
    /// The part file (relative to the directory) with this commit's rows.
    pub part: String,
    /// Rows in the part file.
    pub rows: u64,
    /// Input rows done after this commit (all earlier commits' rows included).
    pub position: u64,
    /// Adaptation batches run after this commit.
    pub adapt_batches: u64,
    /// The adapter state after this commit (relative to the directory); `None` when the job
    /// has no adapter to save (zero-shot).
    pub state: Option<String>,
    /// SHA-256 over the input rows done, in order (each row's location, or a digest of its
    /// image bytes): a resumed run checks that its input starts with the same rows, so a lake
    /// whose listing changed is refused instead of continued at the wrong row.
    #[serde(default)]
    pub input_digest: Option<String>,
    /// The diagnostics of this commit's adaptation batches (relative to the directory); `None`
    /// when it has none (no batch since the last commit, or a checkpoint from before they were kept).
    #[serde(default)]
    pub batches: Option<String>,
}

/// Everything one partition has committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// The partition.
    pub partition: usize,
    /// The settings that determine the output (lake, model hash, classes, method, ...); a
    /// resumed run must have the same.
    pub fingerprint: BTreeMap<String, String>,
    /// The commits, oldest first.
    pub commits: Vec<Commit>,
    /// Whether the partition's input ended (the last commit holds its last rows).
    pub complete: bool,
}

impl Manifest {
    /// The manifest at `path`, or `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let manifest: Self = serde_json::from_str(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
        if manifest.version != MANIFEST_VERSION {
            return Err(Error::config(path, format!("manifest version {} (this cliptta writes {MANIFEST_VERSION})", manifest.version)));
        }
        Ok(Some(manifest))
    }

    /// Writes the manifest to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
        write_atomically(path, &text)
    }

    /// The settings that differ from `fingerprint`, as `key: was → now` lines.
    pub fn differences(&self, fingerprint: &BTreeMap<String, String>) -> Vec<String> {
        let keys: std::collections::BTreeSet<&String> = self.fingerprint.keys().chain(fingerprint.keys()).collect();
        let none = String::from("(unset)");
        keys.into_iter()
            .filter_map(|k| {
                let (was, now) = (self.fingerprint.get(k).unwrap_or(&none), fingerprint.get(k).unwrap_or(&none));
                (was != now).then(|| format!("{k}: `{was}` in the checkpoint, `{now}` now"))
            })
            .collect()
    }

    /// Input rows done.
    pub fn position(&self) -> u64 {
        self.commits.last().map_or(0, |c| c.position)
    }

    /// Rows committed.
    pub fn rows(&self) -> u64 {
        self.commits.iter().map(|c| c.rows).sum()
    }
}
