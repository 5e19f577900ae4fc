//! What an adapter returns for each image of a batch.

use super::diagnostics::BatchDiagnostics;
use super::guard::GuardEvent;

/// Per-image outputs of one adaptation batch, in input order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchPrediction {
    /// Predicted class index.
    pub labels: Vec<u32>,
    /// Probability of the predicted class, `softmax(logit_scale * cos)`.
    pub confidence: Vec<f32>,
    /// Class probabilities, `[image][class]`.
    pub probs: Vec<Vec<f32>>,
    /// Unit image embeddings after adaptation, `[image][dim]`.
    pub embeddings: Vec<Vec<f32>>,
    /// OOD score (log-MCM, T = 1): higher is more in-distribution.
    pub ood_score: Vec<f32>,
    /// `ood_score <= threshold` in the open set; always false in the closed set.
    pub is_ood: Vec<bool>,
    /// The batch's final threshold (open set).
    pub threshold: Option<f32>,
    /// What adaptation did on the batch (`None` from [`Adapter::predict`], which does not adapt).
    ///
    /// [`Adapter::predict`]: super::Adapter::predict
    pub diagnostics: Option<BatchDiagnostics>,
    /// What the guard saw after the batch, if it triggered.
    pub guard: Option<GuardEvent>,
}

impl BatchPrediction {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch was empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The loss at each optimisation step (NaN where a step was skipped as non-finite).
    pub fn losses(&self) -> Vec<f32> {
        self.diagnostics.as_ref().map(BatchDiagnostics::losses).unwrap_or_default()
    }
}
