//! The adaptation losses, on unit image embeddings `z` `[n, d]` and unit class embeddings `t`
//! `[k, d]`, differentiable with respect to `z`.

use candle_core::{Result, Tensor, D};

use crate::model::differentiable_softmax;

pub(crate) fn log_softmax(x: &Tensor) -> Result<Tensor> {
    crate::model::differentiable_log_softmax(x)
}

/// Per row, the entropy of `softmax(logits)` `[n]`.
pub fn row_entropies(logits: &Tensor) -> Result<Tensor> {
    let logp = log_softmax(logits)?;
    (logp.exp()? * &logp)?.sum(D::Minus1)?.neg()
}

/// Mean over rows of the entropy of `softmax(logits)`.
fn mean_row_entropy(logits: &Tensor) -> Result<Tensor> {
    row_entropies(logits)?.mean_all()
}

/// CLIPTTA's soft contrastive loss: each image's pseudo-label (argmax cosine) selects its
/// pseudo-caption `t[ŷ_j]`; the loss is the mean row entropy of
/// `softmax_j(scale * z_i · t[ŷ_j])` over the batch's pseudo-captions, duplicates included.
/// `None` for fewer than two images, where it is identically zero.
pub fn soft_contrastive_loss(z: &Tensor, t: &Tensor, scale: f64) -> Result<Option<Tensor>> {
    if z.dim(0)? < 2 {
        return Ok(None);
    }
    let labels = z.detach().matmul(&t.t()?)?.argmax(D::Minus1)?;
    let captions = t.index_select(&labels, 0)?;
    let logits = (z.matmul(&captions.t()?)? * scale)?;
    mean_row_entropy(&logits).map(Some)
}

/// Entropy of the batch-mean class distribution `H(mean_i softmax(scale * z_i · t))`, with
/// `+1e-6` inside the logarithm as in the official code. Subtracted from the loss (maximised).
pub fn marginal_entropy(z: &Tensor, t: &Tensor, scale: f64) -> Result<Tensor> {
    let probs = differentiable_softmax(&(z.matmul(&t.t()?)? * scale)?)?;
    let mean = probs.mean(0)?;
    (&mean * (&mean + 1e-6)?.log()?)?.sum_all()?.neg()
}

/// TENT's objective: mean entropy of `softmax(scale * z · t)` over the batch.
pub fn tent_entropy(z: &Tensor, t: &Tensor, scale: f64) -> Result<Tensor> {
    mean_row_entropy(&(z.matmul(&t.t()?)? * scale)?)
}

/// One weighted term of a method's loss at one step, as it enters the sum (the terms of a
/// step add up to its loss).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossTerm {
    /// The term's name (`soft_contrastive`, `marginal_entropy`, `oce`, ...).
    pub name: &'static str,
    /// Its value times its weight and sign in the loss.
    pub value: f32,
}

/// One optimisation step's loss.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepLoss {
    /// The loss stepped on; NaN where the step was skipped as non-finite.
    pub loss: f32,
    /// The loss's terms (empty for a skipped step).
    pub terms: Vec<LossTerm>,
}

impl StepLoss {
    /// A step skipped because its loss or a gradient was not finite.
    pub fn skipped() -> Self {
        Self { loss: f32::NAN, terms: Vec::new() }
    }
}

/// A loss built term by term, so each term's value can be reported beside the sum.
#[derive(Debug, Default)]
pub struct LossSum {
    total: Option<Tensor>,
    terms: Vec<(&'static str, Tensor)>,
}

impl LossSum {
    /// Adds `term` (already weighted and signed) to the sum, in call order.
    pub fn add(&mut self, name: &'static str, term: Tensor) -> crate::Result<()> {
        self.total = Some(match self.total.take() {
            None => term.clone(),
            Some(total) => (total + &term)?,
        });
        self.terms.push((name, term));
        Ok(())
    }

    /// The loss; `None` when no term was added.
    pub fn total(&self) -> Option<&Tensor> {
        self.total.as_ref()
    }

    /// The terms' values.
    pub fn values(&self) -> crate::Result<Vec<LossTerm>> {
        self.terms
            .iter()
            .map(|(name, t)| Ok(LossTerm { name, value: t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? as f32 }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn unit(x: &Tensor) -> Tensor {
        x.broadcast_div(&x.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap()).unwrap()
    }

    /// All pseudo-labels equal: every row is uniform, the loss is ln(n) and its gradient zero.
    #[test]
    fn collapsed_batch_has_loss_ln_n_and_zero_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let t = unit(&Tensor::randn(0f64, 1.0, (4, 8), &dev)?);
        // Images all close to class 2.
        let base = t.get(2)?.unsqueeze(0)?.broadcast_as((6, 8))?;
        let z0 = unit(&(base + (Tensor::randn(0f64, 0.05, (6, 8), &dev)?))?);
        let var = Var::from_tensor(&z0)?;
        let loss = soft_contrastive_loss(var.as_tensor(), &t, 100.0)?.unwrap();
        assert!((loss.to_scalar::<f64>()? - (6f64).ln()).abs() < 1e-12);
        let g = loss.backward()?.get(var.as_tensor()).unwrap().abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(g < 1e-12, "{g}");
        Ok(())
    }

    /// n images on n distinct, well-separated classes: the loss is near 0.
    #[test]
    fn distinct_separated_batch_has_loss_near_zero() -> Result<()> {
        let t = Tensor::eye(5, DType::F64, &Device::Cpu)?;
        let loss = soft_contrastive_loss(&t, &t, 100.0)?.unwrap().to_scalar::<f64>()?;
        // Each row: one logit 100, four 0 → entropy ≈ 4·101·e^-100.
        assert!(loss < 1e-38, "{loss}");
        Ok(())
    }

    /// The lower bound log n − H(n_c / n) of the spec's gradient analysis holds.
    #[test]
    fn loss_respects_the_histogram_lower_bound() -> Result<()> {
        let dev = Device::Cpu;
        for seed in 0..20u64 {
            let t = unit(&Tensor::randn(0f64, 1.0, (5, 8), &dev)?);
            let z = unit(&Tensor::randn(0f64, 1.0, (12, 8), &dev)?);
            let scale = 1.0 + 10.0 * seed as f64;
            let loss = soft_contrastive_loss(&z, &t, scale)?.unwrap().to_scalar::<f64>()?;
            let labels = z.matmul(&t.t()?)?.argmax(1)?.to_vec1::<u32>()?;
            let mut counts = [0f64; 5];
            for l in labels {
                counts[l as usize] += 1.0;
            }
            let n = 12f64;
            let h: f64 = counts.iter().filter(|&&c| c > 0.0).map(|&c| -(c / n) * (c / n).ln()).sum();
            assert!(loss >= n.ln() - h - 1e-12, "seed {seed}: {loss} < {}", n.ln() - h);
        }
        Ok(())
    }

    #[test]
    fn marginal_entropy_of_uniform_predictions_is_ln_k() -> Result<()> {
        let t = Tensor::eye(4, DType::F64, &Device::Cpu)?;
        let r = marginal_entropy(&t, &t, 100.0)?.to_scalar::<f64>()?;
        // Each row is a near one-hot on a different class, so the mean is uniform.
        let want = -(0.25f64 * (0.25f64 + 1e-6).ln()) * 4.0;
        assert!((r - want).abs() < 1e-9, "{r} vs {want}");
        Ok(())
    }

    /// Central finite differences (f64) of each loss with respect to z, on seeded inputs.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        use rand::{Rng, SeedableRng};
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut normal = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect() };
        let t = unit(&Tensor::from_vec(normal(15), (3, 5), &dev)?);
        let z0 = Tensor::from_vec(normal(20), (4, 5), &dev)?;
        type LossFn = fn(&Tensor, &Tensor) -> Result<Tensor>;
        let losses: [(&str, LossFn); 3] = [
            ("soft contrastive", |z, t| Ok(soft_contrastive_loss(&unit(z), t, 3.0)?.unwrap())),
            ("marginal entropy", |z, t| marginal_entropy(&unit(z), t, 3.0)),
            ("tent", |z, t| tent_entropy(&unit(z), t, 3.0)),
        ];
        for (name, f) in losses {
            let var = Var::from_tensor(&z0)?;
            let g = f(var.as_tensor(), &t)?.backward()?.get(var.as_tensor()).unwrap().flatten_all()?.to_vec1::<f64>()?;
            let base = z0.flatten_all()?.to_vec1::<f64>()?;
            for i in 0..base.len() {
                let eval = |d: f64| -> Result<f64> {
                    let mut v = base.clone();
                    v[i] += d;
                    f(&Tensor::from_vec(v, (4, 5), &dev)?, &t)?.to_scalar::<f64>()
                };
                let h = 1e-6;
                let fd = (eval(h)? - eval(-h)?) / (2.0 * h);
                // The difference's own error is about 1e-10, so gradients below 1e-6 are
                // compared absolutely.
                let rel = (fd - g[i]).abs() / fd.abs().max(g[i].abs()).max(1e-6);
                assert!(rel < 1e-4, "{name}[{i}]: fd {fd} vs autograd {}", g[i]);
            }
        }
        Ok(())
    }

    #[test]
    fn loss_terms_add_up_in_order() {
        let d = Device::Cpu;
        let mut sum = LossSum::default();
        sum.add("a", Tensor::new(2.5f64, &d).unwrap()).unwrap();
        sum.add("b", Tensor::new(-1.0f64, &d).unwrap()).unwrap();
        assert_eq!(sum.total().unwrap().to_scalar::<f64>().unwrap(), 1.5);
        let values = sum.values().unwrap();
        assert_eq!(values.iter().map(|t| (t.name, t.value)).collect::<Vec<_>>(), vec![("a", 2.5), ("b", -1.0)]);
    }
}
