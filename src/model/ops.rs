//! Tensor operations with a choice of implementation: composed of differentiable candle ops when
//! gradients are needed, candle's fused kernels otherwise.
//!
//! candle-nn's fused `layer_norm` and `softmax_last_dim` have no backward pass, so a gradient
//! through them silently stops. The composed versions below are slower but carry gradients.

use candle_core::{Result, Tensor, D};

/// Whether a forward pass must record what backward needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grad {
    /// Record the graph: gradients reach the LayerNorm parameters.
    Enabled,
    /// Inference: fused kernels, no graph, less memory.
    Disabled,
}

/// LayerNorm over the last dimension built from differentiable ops.
pub fn differentiable_layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let inv_std = (var + eps)?.sqrt()?.recip()?;
    centred.broadcast_mul(&inv_std)?.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Softmax over the last dimension built from differentiable ops.
///
/// The max is subtracted for stability and detached: the softmax does not depend on it.
pub fn differentiable_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&sum)
}

/// Log-softmax over the last dimension built from differentiable ops.
pub fn differentiable_log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

pub(crate) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64, grad: Grad) -> Result<Tensor> {
    if super::fused::supported(x) {
        return match grad {
            Grad::Enabled => super::fused::layer_norm(x, weight, bias, eps),
            Grad::Disabled => super::fused::layer_norm(&x.detach(), &weight.detach(), &bias.detach(), eps),
        };
    }
    match grad {
        Grad::Enabled => differentiable_layer_norm(x, weight, bias, eps),
        Grad::Disabled => {
            let x = x.contiguous()?;
            candle_nn::ops::layer_norm(&x, &weight.detach(), &bias.detach(), eps as f32)
        }
    }
}

pub(crate) fn softmax(x: &Tensor, grad: Grad) -> Result<Tensor> {
    if super::fused::supported(x) {
        return super::fused::softmax(x);
    }
    match grad {
        Grad::Enabled => differentiable_softmax(x),
        Grad::Disabled => candle_nn::ops::softmax_last_dim(&x.contiguous()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn composed_and_fused_layer_norm_agree() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (3, 5, 16), &dev)?;
        let w = Tensor::randn(1f32, 0.3, 16, &dev)?;
        let b = Tensor::randn(0f32, 0.3, 16, &dev)?;
        let a = differentiable_layer_norm(&x, &w, &b, 1e-5)?;
        let f = candle_nn::ops::layer_norm(&x, &w, &b, 1e-5)?;
        let diff = (a - f)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        Ok(())
    }

    #[test]
    fn composed_and_fused_softmax_agree() -> Result<()> {
        let x = Tensor::randn(0f32, 5.0, (4, 7), &Device::Cpu)?;
        let a = differentiable_softmax(&x)?;
        let f = candle_nn::ops::softmax_last_dim(&x)?;
        let diff = (a - &f)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        let ls = differentiable_log_softmax(&x)?.exp()?;
        let diff = (ls - f)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        Ok(())
    }

    /// Finite differences in f64 of sum(LN(x) * r) with respect to the LN weight and bias.
    #[test]
    fn layer_norm_gradient_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 1.0, (2, 3, 6), &dev)?;
        let r = Tensor::randn(0f64, 1.0, (2, 3, 6), &dev)?;
        let w = Var::from_tensor(&Tensor::randn(1f64, 0.2, 6, &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f64, 0.2, 6, &dev)?)?;
        let loss = |w: &Tensor, b: &Tensor| -> Result<Tensor> {
            (differentiable_layer_norm(&x, w, b, 1e-5)?.exp()? * &r)?.sum_all()
        };
        let grads = loss(w.as_tensor(), b.as_tensor())?.backward()?;
        for var in [&w, &b] {
            let g = grads.get(var.as_tensor()).expect("gradient").to_vec1::<f64>()?;
            let base = var.as_tensor().to_vec1::<f64>()?;
            for i in 0..base.len() {
                let h = 1e-6;
                let mut plus = base.clone();
                plus[i] += h;
                let mut minus = base.clone();
                minus[i] -= h;
                let eval = |v: Vec<f64>| -> Result<f64> {
                    let t = Tensor::from_vec(v, 6, &dev)?;
                    let out = if std::ptr::eq(var, &w) { loss(&t, b.as_tensor())? } else { loss(w.as_tensor(), &t)? };
                    out.to_scalar::<f64>()
                };
                let fd = (eval(plus)? - eval(minus)?) / (2.0 * h);
                // Central differences in f64 with h = 1e-6 carry a rounding error of about
                // 1e-16 * |loss| / h ~ 1e-9 besides their O(h^2) error, so a small gradient is
                // compared absolutely (the inputs are unseeded; a purely relative bound failed
                // on a gradient of 5.5e-4 that agreed to 1.5e-9).
                let err = (fd - g[i]).abs();
                assert!(err < 1e-8 + 1e-6 * fd.abs(), "param {i}: fd {fd} vs autograd {}", g[i]);
            }
        }
        Ok(())
    }
}
