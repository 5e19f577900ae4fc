//! Open-set scoring: the log-MCM OOD score and the Outlier Contrastive Exposure loss.

use candle_core::{Result, Tensor, D};

use super::loss::log_softmax;

/// log-MCM with temperature 1: `max_k log softmax_k(cos_ik)` per image. Higher means more
/// in-distribution. Differentiable.
pub fn log_mcm_score(cosines: &Tensor) -> Result<Tensor> {
    log_softmax(cosines)?.max(D::Minus1)
}

/// OCE ("avg_contrastive"): with soft ID weights `w = sigmoid((s - alpha) / gamma)`,
/// `-(mean_w(s) - mean_{1-w}(s))^2`. Differentiable in the scores and in `alpha` (shape `[1]`).
pub fn oce_loss(scores: &Tensor, alpha: &Tensor, gamma: f64) -> Result<Tensor> {
    let w = candle_nn::ops::sigmoid(&(scores.broadcast_sub(alpha)? / gamma)?)?;
    let not_w = (1.0 - &w)?;
    let mu_in = ((&w * scores)?.sum_all()? / w.sum_all()?)?;
    let mu_out = ((&not_w * scores)?.sum_all()? / not_w.sum_all()?)?;
    (mu_in - mu_out)?.sqr()?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn oce_is_zero_when_all_weights_are_equal() -> Result<()> {
        let dev = Device::Cpu;
        // Every score equals alpha: every weight is 1/2, both means equal the plain mean.
        let s = Tensor::new(&[0.3f64, 0.3, 0.3], &dev)?;
        let a = Tensor::new(&[0.3f64], &dev)?;
        assert_eq!(oce_loss(&s, &a, 0.005)?.to_scalar::<f64>()?, 0.0);
        Ok(())
    }

    #[test]
    fn log_mcm_is_max_log_softmax() -> Result<()> {
        let c = Tensor::new(&[[0.2f64, 0.5, 0.1]], &Device::Cpu)?;
        let want = 0.5 - (0.2f64.exp() + 0.5f64.exp() + 0.1f64.exp()).ln();
        assert!((log_mcm_score(&c)?.to_vec1::<f64>()?[0] - want).abs() < 1e-12);
        Ok(())
    }

    /// Finite differences (f64) of OCE with respect to the scores and the threshold, and of
    /// log-MCM with respect to the cosines.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let s0 = vec![0.10f64, 0.12, 0.30, 0.33, 0.31, 0.09];
        let a0 = 0.2f64;
        let gamma = 0.05;
        let sv = Var::new(s0.as_slice(), &dev)?;
        let av = Var::new(&[a0], &dev)?;
        let grads = oce_loss(sv.as_tensor(), av.as_tensor(), gamma)?.backward()?;
        let gs = grads.get(sv.as_tensor()).unwrap().to_vec1::<f64>()?;
        let ga = grads.get(av.as_tensor()).unwrap().to_vec1::<f64>()?[0];
        let eval = |s: &[f64], a: f64| -> Result<f64> {
            oce_loss(&Tensor::new(s, &dev)?, &Tensor::new(&[a], &dev)?, gamma)?.to_scalar::<f64>()
        };
        let h = 1e-7;
        for i in 0..s0.len() {
            let (mut p, mut m) = (s0.clone(), s0.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (eval(&p, a0)? - eval(&m, a0)?) / (2.0 * h);
            assert!((fd - gs[i]).abs() <= 1e-4 * fd.abs().max(1e-6), "score {i}: {fd} vs {}", gs[i]);
        }
        let fd = (eval(&s0, a0 + h)? - eval(&s0, a0 - h)?) / (2.0 * h);
        assert!((fd - ga).abs() <= 1e-4 * fd.abs().max(1e-6), "alpha: {fd} vs {ga}");

        let c0 = vec![0.2f64, -0.4, 0.7, 0.1, 0.0, 0.3];
        let cv = Var::from_vec(c0.clone(), (2, 3), &dev)?;
        let g = log_mcm_score(cv.as_tensor())?.sum_all()?.backward()?.get(cv.as_tensor()).unwrap().flatten_all()?.to_vec1::<f64>()?;
        for i in 0..6 {
            let f = |d: f64| -> Result<f64> {
                let mut v = c0.clone();
                v[i] += d;
                log_mcm_score(&Tensor::from_vec(v, (2, 3), &dev)?)?.sum_all()?.to_scalar::<f64>()
            };
            let fd = (f(h)? - f(-h)?) / (2.0 * h);
            assert!((fd - g[i]).abs() <= 1e-5 * fd.abs().max(1e-6), "cos {i}: {fd} vs {}", g[i]);
        }
        Ok(())
    }
}
