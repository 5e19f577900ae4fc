//! What one adaptation batch did: the numbers that tell whether adaptation helped or hurt.
//!
//! The adapter fills a [`BatchDiagnostics`] for every batch it adapts on and returns it with
//! the batch's predictions; the job layer writes them as `batches.parquet`
//! (`job/batches.rs`) and the [`Guard`](super::Guard) watches them.

use candle_core::{DType, Tensor};

use super::loss::StepLoss;
use super::methods::Method;
use crate::error::Result;
use crate::model::{NormParams, NormSnapshot};

/// What the adapter did on one batch and how its predictions look.
///
/// Equality leaves out `seconds`, the one field that differs between two runs of the same
/// stream (so an adapter resumed from a saved state compares equal to one that never stopped).
#[derive(Debug, Clone)]
pub struct BatchDiagnostics {
    /// The method.
    pub method: Method,
    /// Images in the batch.
    pub rows: usize,
    /// Whether the method adapted on it (a batch smaller than the method needs is only predicted).
    pub adapted: bool,
    /// Each optimisation step's loss and terms, in order (none for training-free methods).
    pub steps: Vec<StepLoss>,
    /// Steps of this batch skipped because the loss or a gradient was not finite.
    pub skipped_steps: u64,
    /// Mean over images of the entropy of the final class probabilities (nats).
    pub mean_entropy: f32,
    /// Entropy of the batch's mean class probabilities (nats): low when every image gets the same class.
    pub marginal_entropy: f32,
    /// Distinct classes predicted.
    pub classes_predicted: usize,
    /// Share of the images judged in-distribution (open set only).
    pub id_fraction: Option<f32>,
    /// The batch's final OOD threshold (methods with one, open set).
    pub threshold: Option<f32>,
    /// `‖θ − θ₀‖ / ‖θ₀‖` over every adapted LayerNorm tensor after the batch, θ₀ the checkpoint's.
    pub distance: f32,
    /// Seconds spent adapting and predicting.
    pub seconds: f64,
}

impl PartialEq for BatchDiagnostics {
    fn eq(&self, o: &Self) -> bool {
        let bits = |x: f32| x.to_bits();
        let steps_eq = self.steps.len() == o.steps.len()
            && self.steps.iter().zip(&o.steps).all(|(a, b)| {
                bits(a.loss) == bits(b.loss)
                    && a.terms.len() == b.terms.len()
                    && a.terms.iter().zip(&b.terms).all(|(x, y)| x.name == y.name && bits(x.value) == bits(y.value))
            });
        self.method == o.method
            && self.rows == o.rows
            && self.adapted == o.adapted
            && steps_eq
            && self.skipped_steps == o.skipped_steps
            && bits(self.mean_entropy) == bits(o.mean_entropy)
            && bits(self.marginal_entropy) == bits(o.marginal_entropy)
            && self.classes_predicted == o.classes_predicted
            && self.id_fraction.map(bits) == o.id_fraction.map(bits)
            && self.threshold.map(bits) == o.threshold.map(bits)
            && bits(self.distance) == bits(o.distance)
    }
}

impl BatchDiagnostics {
    /// The first step's loss (`None` without steps).
    pub fn loss_first(&self) -> Option<f32> {
        self.steps.first().map(|s| s.loss)
    }

    /// The last step's loss (`None` without steps).
    pub fn loss_last(&self) -> Option<f32> {
        self.steps.last().map(|s| s.loss)
    }

    /// Every step's loss, in order.
    pub fn losses(&self) -> Vec<f32> {
        self.steps.iter().map(|s| s.loss).collect()
    }

    /// The names of the loss's terms, in the order of their first appearance.
    pub fn term_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for term in self.steps.iter().flat_map(|s| &s.terms) {
            if !names.contains(&term.name) {
                names.push(term.name);
            }
        }
        names
    }

    /// A term's value at the first and last step that has it.
    pub fn term_first_last(&self, name: &str) -> Option<(f32, f32)> {
        let mut values = self.steps.iter().flat_map(|s| &s.terms).filter(|t| t.name == name).map(|t| t.value);
        let first = values.next()?;
        Some((first, values.last().unwrap_or(first)))
    }
}

/// Mean entropy of each row of `probs` and entropy of the mean row, in nats (`0 ln 0 = 0`).
pub fn prediction_entropies(probs: &Tensor) -> Result<(f32, f32)> {
    let rows = probs.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    if rows.is_empty() {
        return Ok((0.0, 0.0));
    }
    let entropy = |p: &[f64]| -> f64 { -p.iter().filter(|&&x| x > 0.0).map(|&x| x * x.ln()).sum::<f64>() };
    let mean = rows.iter().map(|r| entropy(r)).sum::<f64>() / rows.len() as f64;
    let classes = rows[0].len();
    let marginal: Vec<f64> = (0..classes).map(|c| rows.iter().map(|r| r[c]).sum::<f64>() / rows.len() as f64).collect();
    Ok((mean as f32, entropy(&marginal) as f32))
}

/// `‖θ − θ₀‖ / ‖θ₀‖` over every LayerNorm tensor (0 when θ₀ is all zeros).
pub fn relative_distance(params: &NormParams, initial: &NormSnapshot) -> Result<f32> {
    let (mut diff, mut base) = (0f64, 0f64);
    for (var, t0) in params.vars().iter().zip(initial.tensors()) {
        diff += (var.as_tensor() - t0)?.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        base += t0.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    }
    Ok(if base > 0.0 { (diff / base).sqrt() as f32 } else { 0.0 })
}

/// Distinct values among `labels`.
pub fn distinct_classes(labels: &[u32]) -> usize {
    let mut seen: Vec<u32> = labels.to_vec();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn entropies_match_closed_forms() {
        // Two one-hot rows on different classes: each row has entropy 0, their mean is uniform
        // over two classes (ln 2).
        let p = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 1.0, 0.0]], &Device::Cpu).unwrap();
        let (mean, marginal) = prediction_entropies(&p).unwrap();
        assert_eq!(mean, 0.0);
        assert!((marginal - std::f32::consts::LN_2).abs() < 1e-6);
        // Uniform rows: both are ln 3.
        let u = Tensor::new(&[[1f32 / 3.0; 3]; 4], &Device::Cpu).unwrap();
        let (mean, marginal) = prediction_entropies(&u).unwrap();
        assert!((mean - 3f32.ln()).abs() < 1e-6 && (marginal - 3f32.ln()).abs() < 1e-6);
    }
}
