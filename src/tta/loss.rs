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

    /// Central finite differences (f64) of each loss with respect to z.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let t = unit(&Tensor::randn(0f64, 1.0, (3, 5), &dev)?);
        let z0 = Tensor::randn(0f64, 1.0, (4, 5), &dev)?;
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
                let rel = (fd - g[i]).abs() / fd.abs().max(g[i].abs()).max(1e-7);
                assert!(rel < 1e-4, "{name}[{i}]: fd {fd} vs autograd {}", g[i]);
            }
        }
        Ok(())
    }
}
