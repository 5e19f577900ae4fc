//! The reorder buffer of a partition's stream: chunks of input rows wait, in input order, until
//! each of their rows has failed or been predicted, however the adaptation batches cut them.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::{internal_datafusion_err, Result};

use super::loader::RowFailure;
use crate::tta::BatchPrediction;

/// A row of a waiting chunk: its chunk's sequence number and its index in the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowKey {
    /// Sequence number of the chunk (0 for the partition's first).
    pub chunk: u64,
    /// Row index within the chunk.
    pub row: usize,
}

/// What is known of one row.
#[derive(Debug, Clone)]
pub enum RowOutcome {
    /// Its image waits for an adaptation batch.
    Waiting,
    /// It failed; it never reaches the adapter.
    Failed(RowFailure),
    /// Image `index` of this adaptation batch's output.
    Predicted(Arc<BatchPrediction>, usize),
}

/// A chunk of input rows and the outcome of each.
pub struct WaitingChunk {
    /// The input rows.
    pub batch: RecordBatch,
    /// One per row.
    pub outcomes: Vec<RowOutcome>,
    waiting: usize,
    /// Rows of the chunk already released by [`ReorderBuffer::pop_decided_prefix`]; `batch` and
    /// `outcomes` start after them, while [`RowKey::row`] keeps counting from the chunk's start.
    released: usize,
}

/// Chunks in input order; the front ones leave once all their rows are decided.
#[derive(Default)]
pub struct ReorderBuffer {
    chunks: VecDeque<WaitingChunk>,
    front: u64,
}

impl ReorderBuffer {
    /// Adds a chunk whose rows are `outcomes` (`Waiting` or `Failed`); returns its sequence number.
    pub fn push(&mut self, batch: RecordBatch, outcomes: Vec<RowOutcome>) -> u64 {
        let waiting = outcomes.iter().filter(|o| matches!(o, RowOutcome::Waiting)).count();
        self.chunks.push_back(WaitingChunk { batch, outcomes, waiting, released: 0 });
        self.front + self.chunks.len() as u64 - 1
    }

    /// Records that the row at `key` is image `index` of `prediction`.
    pub fn predicted(&mut self, key: RowKey, prediction: &Arc<BatchPrediction>, index: usize) -> Result<()> {
        let position = key.chunk.checked_sub(self.front).map(|p| p as usize);
        let chunk = position
            .and_then(|p| self.chunks.get_mut(p))
            .ok_or_else(|| internal_datafusion_err!("prediction for chunk {} which is not waiting", key.chunk))?;
        let index_in_chunk = key.row.checked_sub(chunk.released).ok_or_else(|| internal_datafusion_err!("prediction for a released row"))?;
        let outcome = chunk.outcomes.get_mut(index_in_chunk).ok_or_else(|| internal_datafusion_err!("prediction for a row out of range"))?;
        if !matches!(outcome, RowOutcome::Waiting) {
            return Err(internal_datafusion_err!("row {} of chunk {} predicted twice", key.row, key.chunk));
        }
        *outcome = RowOutcome::Predicted(prediction.clone(), index);
        chunk.waiting -= 1;
        Ok(())
    }

    /// The next chunk whose rows are all decided, in input order.
    pub fn pop_complete(&mut self) -> Option<WaitingChunk> {
        if self.chunks.front().is_some_and(|c| c.waiting == 0) {
            self.front += 1;
            self.chunks.pop_front()
        } else {
            None
        }
    }

    /// Every decided row at the front, possibly part of a chunk: after an adaptation batch this
    /// releases every row up to the batch's last image (what a checkpoint commits).
    pub fn pop_decided_prefix(&mut self) -> Option<WaitingChunk> {
        if let Some(whole) = self.pop_complete() {
            return Some(whole);
        }
        let chunk = self.chunks.front_mut()?;
        let decided = chunk.outcomes.iter().take_while(|o| !matches!(o, RowOutcome::Waiting)).count();
        if decided == 0 {
            return None;
        }
        let batch = chunk.batch.slice(0, decided);
        chunk.batch = chunk.batch.slice(decided, chunk.batch.num_rows() - decided);
        let outcomes: Vec<RowOutcome> = chunk.outcomes.drain(..decided).collect();
        chunk.released += decided;
        Some(WaitingChunk { batch, outcomes, waiting: 0, released: 0 })
    }

    /// Chunks still waiting.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether no chunk waits.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}
