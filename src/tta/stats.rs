//! Counters over an adapter's life.

use serde::{Deserialize, Serialize};

/// Counters over the adapter's life (since creation or the last load).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdaptStats {
    /// Batches processed.
    pub batches: u64,
    /// Images processed.
    pub images: u64,
    /// Optimiser steps taken.
    pub steps: u64,
    /// Steps skipped because the loss or a gradient was not finite (weights kept).
    pub skipped_steps: u64,
    /// Batches predicted without adaptation (smaller than the method needs).
    pub unadapted_batches: u64,
    /// Times the method returned the LayerNorms to the checkpoint by its own rule (SAR's model
    /// recovery).
    #[serde(default)]
    pub recoveries: u64,
    /// Times the guard reset the adapter (`guard => 'reset'`).
    #[serde(default)]
    pub guard_resets: u64,
}
