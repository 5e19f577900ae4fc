//! Fused CPU kernels with backward passes for the three operations that dominate adaptation:
//! LayerNorm, softmax over the last dimension, and QuickGELU.
//!
//! candle-nn's fused LayerNorm and softmax have no backward, and the same operations composed
//! of candle ops make backward ~30x the cost of a forward on a small ViT (measured with
//! `examples/bench_model.rs`): each composed op is one more full pass over the activations, and
//! candle runs element-wise ops on one thread. These kernels do one pass per row, in parallel
//! over rows with rayon, and their backward passes are kernels of the same kind. They serve CPU
//! tensors in f32 and f64; other devices use the composed ops in [`super::ops`].

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::fast_exp::Exp;
#[cfg(feature = "cuda")]
use super::fused_cuda;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;

/// Whether the fused kernels can run on this tensor.
pub(crate) fn supported(x: &Tensor) -> bool {
    match x.device() {
        d if d.is_cpu() => matches!(x.dtype(), DType::F32 | DType::F64),
        d if d.is_cuda() => cfg!(feature = "cuda") && x.dtype() == DType::F32,
        _ => false,
    }
}

/// LayerNorm over the last dimension, differentiable in `x`, `weight` and `bias`.
pub(crate) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, LayerNorm { eps })
}

/// Softmax over the last dimension, differentiable.
pub(crate) fn softmax(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}

/// `x * sigmoid(1.702 x)`, differentiable.
pub(crate) fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(QuickGelu)
}

fn contiguous<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: input is not contiguous"),
    }
}

fn last_dim(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1).max(1)
}

/// Mean and reciprocal standard deviation of one row.
fn row_stats<T: WithDType>(row: &[T], eps: f64) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = row.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

pub(crate) fn ln_forward<T: WithDType>(x: &[T], w: &[T], b: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut out = vec![T::from_f64(0.0); x.len()];
    out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(o, xr)| {
        let (mean, rstd) = row_stats(xr, eps);
        for i in 0..d {
            o[i] = T::from_f64((xr[i].to_f64() - mean) * rstd * w[i].to_f64() + b[i].to_f64());
        }
    });
    out
}

fn ln_grad_x<T: WithDType>(x: &[T], w: &[T], g: &[T], eps: f64) -> Vec<T> {
    let mut out = vec![T::from_f64(0.0); x.len()];
    ln_grad_x_add(x, w, g, eps, &mut out);
    out
}

/// Adds LayerNorm's input gradient to `acc`: in a residual block the input also receives the
/// skip connection's gradient, and adding in the same pass saves one pass and one buffer.
pub(crate) fn ln_grad_x_add<T: WithDType>(x: &[T], w: &[T], g: &[T], eps: f64, acc: &mut [T]) {
    let d = w.len();
    acc.par_chunks_mut(d).zip(x.par_chunks(d).zip(g.par_chunks(d))).for_each(|(o, (xr, gr))| {
        let (mean, rstd) = row_stats(xr, eps);
        let (mut m1, mut m2) = (0.0, 0.0);
        for i in 0..d {
            let xhat = (xr[i].to_f64() - mean) * rstd;
            let dxhat = gr[i].to_f64() * w[i].to_f64();
            m1 += dxhat;
            m2 += dxhat * xhat;
        }
        let (m1, m2) = (m1 / d as f64, m2 / d as f64);
        for i in 0..d {
            let xhat = (xr[i].to_f64() - mean) * rstd;
            let dxhat = gr[i].to_f64() * w[i].to_f64();
            o[i] = T::from_f64(o[i].to_f64() + rstd * (dxhat - m1 - xhat * m2));
        }
    });
}

/// `[sum over rows of g * xhat, sum over rows of g]`, i.e. the weight and bias gradients.
pub(crate) fn ln_grad_wb<T: WithDType>(x: &[T], g: &[T], d: usize, eps: f64) -> Vec<T> {
    let sums = x
        .par_chunks(d)
        .zip(g.par_chunks(d))
        .fold(
            || vec![0f64; 2 * d],
            |mut acc, (xr, gr)| {
                let (mean, rstd) = row_stats(xr, eps);
                for i in 0..d {
                    let gi = gr[i].to_f64();
                    acc[i] += gi * (xr[i].to_f64() - mean) * rstd;
                    acc[d + i] += gi;
                }
                acc
            },
        )
        .reduce(
            || vec![0f64; 2 * d],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    sums.into_iter().map(T::from_f64).collect()
}

fn softmax_forward<T: Exp>(x: &[T], d: usize) -> Vec<T> {
    let mut out = x.to_vec();
    out.par_chunks_mut(d).for_each(softmax_in_place);
    out
}

/// Softmax of one row, in place (shifted by the row's maximum for range).
pub(crate) fn softmax_in_place<T: Exp>(row: &mut [T]) {
    let max = row.iter().copied().fold(T::from_f64(f64::NEG_INFINITY), |a, b| if b > a { b } else { a });
    row.iter_mut().for_each(|v| *v -= max);
    T::exp_in_place(row);
    let sum = row.iter().fold(T::from_f64(0.0), |a, b| a + *b);
    let inv = T::from_f64(1.0) / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

fn softmax_grad<T: WithDType>(y: &[T], g: &[T], d: usize) -> Vec<T> {
    let mut out = vec![T::from_f64(0.0); y.len()];
    out.par_chunks_mut(d).zip(y.par_chunks(d).zip(g.par_chunks(d))).for_each(|(o, (yr, gr))| {
        let dot: f64 = yr.iter().zip(gr).map(|(a, b)| a.to_f64() * b.to_f64()).sum();
        for i in 0..d {
            o[i] = T::from_f64(yr[i].to_f64() * (gr[i].to_f64() - dot));
        }
    });
    out
}

const GELU_K: f64 = 1.702;

/// Element chunk of the QuickGELU kernels: rayon's unit of work and the length of the `exp`
/// loop that vectorises.
const CHUNK: usize = 4096;

/// `s = sigmoid(1.702 x)`, element-wise.
fn gelu_sigmoid<T: Exp>(x: &[T], s: &mut [T]) {
    let (minus_k, one) = (T::from_f64(-GELU_K), T::from_f64(1.0));
    s.iter_mut().zip(x).for_each(|(s, x)| *s = minus_k * *x);
    T::exp_in_place(s);
    s.iter_mut().for_each(|s| *s = one / (one + *s));
}

pub(crate) fn quick_gelu_forward<T: Exp>(x: &[T]) -> Vec<T> {
    let mut out = vec![T::from_f64(0.0); x.len()];
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| {
        gelu_sigmoid(x, o);
        o.iter_mut().zip(x).for_each(|(o, x)| *o *= *x);
    });
    out
}

fn quick_gelu_grad<T: Exp>(x: &[T], g: &[T]) -> Vec<T> {
    let mut out = g.to_vec();
    quick_gelu_grad_in_place(x, &mut out);
    out
}

/// Turns the gradient `g` of QuickGELU's output into that of its input `x`, in place:
/// `g * (s + k x s (1 - s))` with `s = sigmoid(k x)`.
pub(crate) fn quick_gelu_grad_in_place<T: Exp>(x: &[T], g: &mut [T]) {
    let (k, one) = (T::from_f64(GELU_K), T::from_f64(1.0));
    g.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(g, x)| {
        let mut s = vec![T::from_f64(0.0); x.len()];
        gelu_sigmoid(x, &mut s);
        for ((g, x), s) in g.iter_mut().zip(x).zip(&s) {
            *g *= *s + k * *x * *s * (one - *s);
        }
    });
}

/// Runs `$body` with the slices of matching f32 or f64 storages bound to `$name`s.
macro_rules! dispatch {
    ($op:expr, $shape:expr, [$(($name:ident, $s:expr, $l:expr)),+], $body:expr) => {
        match ($($s,)+) {
            ($(CpuStorage::F32($name),)+) => {
                $(let $name = contiguous($name, $l, $op)?;)+
                Ok((CpuStorage::F32($body), $shape))
            }
            ($(CpuStorage::F64($name),)+) => {
                $(let $name = contiguous($name, $l, $op)?;)+
                Ok((CpuStorage::F64($body), $shape))
            }
            _ => bail!("{}: only f32 and f64 tensors of one dtype are supported", $op),
        }
    };
}

struct LayerNorm {
    eps: f64,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        if l2.shape().elem_count() != last_dim(l1) || l3.shape().elem_count() != last_dim(l1) {
            bail!("fused-layer-norm: weight/bias size differs from the last dimension {:?}", l1.dims());
        }
        let eps = self.eps;
        dispatch!(self.name(), l1.shape().clone(), [(x, s1, l1), (w, s2, l2), (b, s3, l3)], ln_forward(x, w, b, eps))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout, s3: &CudaStorage, l3: &Layout) -> Result<(CudaStorage, Shape)> {
        if l2.shape().elem_count() != last_dim(l1) || l3.shape().elem_count() != last_dim(l1) {
            bail!("fused-layer-norm: weight/bias size differs from the last dimension {:?}", l1.dims());
        }
        fused_cuda::layer_norm((s1, l1), (s2, l2), (s3, l3), self.eps)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &grad, &LayerNormGradX { eps: self.eps })?;
        let wb = x.apply_op2_no_bwd(&grad, &LayerNormGradWeightBias { eps: self.eps })?;
        Ok((Some(dx), Some(wb.get(0)?), Some(wb.get(1)?)))
    }
}

struct LayerNormGradX {
    eps: f64,
}

impl CustomOp3 for LayerNormGradX {
    fn name(&self) -> &'static str {
        "fused-layer-norm-grad-x"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let eps = self.eps;
        dispatch!(self.name(), l1.shape().clone(), [(x, s1, l1), (w, s2, l2), (g, s3, l3)], ln_grad_x(x, w, g, eps))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout, s3: &CudaStorage, l3: &Layout) -> Result<(CudaStorage, Shape)> {
        fused_cuda::layer_norm_grad_x((s1, l1), (s2, l2), (s3, l3), self.eps)
    }
}

struct LayerNormGradWeightBias {
    eps: f64,
}

impl CustomOp2 for LayerNormGradWeightBias {
    fn name(&self) -> &'static str {
        "fused-layer-norm-grad-weight-bias"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(l1);
        let eps = self.eps;
        dispatch!(self.name(), Shape::from((2, d)), [(x, s1, l1), (g, s2, l2)], ln_grad_wb(x, g, d, eps))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        fused_cuda::layer_norm_grad_wb((s1, l1), (s2, l2), self.eps)
    }
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(l);
        dispatch!(self.name(), l.shape().clone(), [(x, s, l)], softmax_forward(x, d))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        fused_cuda::softmax((s, l))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?))
    }
}

struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-softmax-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(l1);
        dispatch!(self.name(), l1.shape().clone(), [(y, s1, l1), (g, s2, l2)], softmax_grad(y, g, d))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        fused_cuda::softmax_grad((s1, l1), (s2, l2))
    }
}

struct QuickGelu;

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "fused-quick-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), l.shape().clone(), [(x, s, l)], quick_gelu_forward(x))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        fused_cuda::quick_gelu((s, l))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &QuickGeluGrad)?))
    }
}

struct QuickGeluGrad;

impl CustomOp2 for QuickGeluGrad {
    fn name(&self) -> &'static str {
        "fused-quick-gelu-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), l1.shape().clone(), [(x, s1, l1), (g, s2, l2)], quick_gelu_grad(x, g))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        fused_cuda::quick_gelu_grad((s1, l1), (s2, l2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::{differentiable_layer_norm, differentiable_softmax};
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    /// Values and gradients of the fused kernels equal those of the composed candle ops (f64),
    /// whose gradients are themselves checked by finite differences in `ops.rs`.
    #[test]
    fn match_the_composed_ops_in_value_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 2.0, (3, 4, 16), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(1f64, 0.3, 16, &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f64, 0.3, 16, &dev)?)?;
        let r = Tensor::randn(0f64, 1.0, (3, 4, 16), &dev)?;
        type F = fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>;
        let pairs: [(&str, F, F); 3] = [
            ("layer norm", |x, w, b| layer_norm(x, w, b, 1e-5), |x, w, b| differentiable_layer_norm(x, w, b, 1e-5)),
            ("softmax", |x, w, _| softmax(&x.broadcast_mul(w)?), |x, w, _| differentiable_softmax(&x.broadcast_mul(w)?)),
            (
                "quick gelu",
                |x, w, _| quick_gelu(&x.broadcast_mul(w)?),
                |x, w, _| {
                    let v = x.broadcast_mul(w)?;
                    &v * candle_nn::ops::sigmoid(&(&v * 1.702)?)?
                },
            ),
        ];
        for (name, fused, composed) in pairs {
            let yf = fused(x.as_tensor(), w.as_tensor(), b.as_tensor())?;
            let yc = composed(x.as_tensor(), w.as_tensor(), b.as_tensor())?;
            assert!(max_diff(&yf, &yc) < 1e-12, "{name} forward");
            let gf = (yf * &r)?.sum_all()?.backward()?;
            let gc = (yc * &r)?.sum_all()?.backward()?;
            for (what, v) in [("x", &x), ("w", &w), ("b", &b)] {
                match (gf.get(v.as_tensor()), gc.get(v.as_tensor())) {
                    (Some(a), Some(c)) => assert!(max_diff(a, c) < 1e-10, "{name} d/d{what}: {}", max_diff(a, c)),
                    (None, None) => {}
                    (a, c) => panic!("{name} d/d{what}: fused {:?} vs composed {:?}", a.is_some(), c.is_some()),
                }
            }
        }
        // f32 works too.
        let x32 = Tensor::randn(0f32, 1.0, (5, 8), &dev)?;
        let diff = max_diff(&softmax(&x32)?, &candle_nn::ops::softmax_last_dim(&x32)?);
        assert!(diff < 1e-6, "{diff}");
        Ok(())
    }
}
