//! When adapted state returns to the checkpoint's values.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// When adapted state returns to the checkpoint's values. One policy for the adapter and the
/// SQL layer: an adapter sees `never` and `per_partition` alike (it adapts across its whole
/// stream); they differ in whether a scan's partitions share one adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Reset {
    /// Continual: adapt across the whole stream (the official protocol within a stream); in
    /// SQL, one adapter for the whole scan, shared by its partitions.
    #[default]
    #[serde(alias = "continual")]
    Never,
    /// Episodic: reset before every batch.
    #[serde(alias = "episodic")]
    PerBatch,
    /// One fresh adapter per partition of a scan, continual within it.
    PerPartition,
}

impl Reset {
    /// Every policy.
    pub const ALL: [Reset; 3] = [Reset::Never, Reset::PerBatch, Reset::PerPartition];

    /// The option's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::PerBatch => "per_batch",
            Self::PerPartition => "per_partition",
        }
    }
}

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Reset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "never" | "continual" => Ok(Self::Never),
            "per_batch" | "episodic" => Ok(Self::PerBatch),
            "per_partition" => Ok(Self::PerPartition),
            other => Err(Error::InvalidInput(format!("unknown reset policy `{other}`; expected never, per_batch or per_partition"))),
        }
    }
}
