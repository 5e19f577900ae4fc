//! Multi-head self-attention as one CPU kernel, from the fused q/k/v projection to the heads'
//! concatenated output, with its own backward.
//!
//! Composed of candle ops, attention costs three copies to split q, k and v into heads, a
//! batched matmul that calls the matrix kernel once per (image, head) with thread hand-off each
//! time, a softmax, a second batched matmul and a copy to merge the heads; and candle keeps the
//! scores, the probabilities and every copy alive for the backward pass. This kernel reads
//! q, k and v in place from the `[batch, tokens, 3 * dim]` projection, works image by image in
//! parallel (one thread per image, single-threaded products inside), writes the output directly
//! in `[batch, tokens, dim]` layout, and keeps nothing: the backward pass recomputes each head's
//! probabilities, which costs a fraction of the dense layers around it.
//!
//! The query projection must already carry the `1/sqrt(head_dim)` scale (see
//! `layers::Attention::new`). No mask: the text tower, which needs a causal one, keeps the
//! composed path.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::fast_exp::Exp;
use super::fused::softmax_in_place;

/// Attention over `qkv: [batch, tokens, 3 * dim]` (q, k, v side by side, heads contiguous
/// within each), returning `[batch, tokens, dim]`. Differentiable in `qkv`.
pub(crate) fn attention(qkv: &Tensor, num_heads: usize) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1(FusedAttention { num_heads })
}

/// Whether [`attention`] can run on this tensor.
pub(crate) fn supported(qkv: &Tensor) -> bool {
    qkv.device().is_cpu() && matches!(qkv.dtype(), DType::F32 | DType::F64)
}

/// Shape of one call: batch, tokens, model width, heads.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub batch: usize,
    pub tokens: usize,
    pub dim: usize,
    pub heads: usize,
}

impl Dims {
    fn new(op: &str, layout: &Layout, heads: usize) -> Result<Self> {
        let (batch, tokens, three_dim) = match layout.dims() {
            [b, t, d] => (*b, *t, *d),
            d => bail!("{op}: input must be [batch, tokens, 3 * dim], got {d:?}"),
        };
        if three_dim % 3 != 0 || heads == 0 || (three_dim / 3) % heads != 0 {
            bail!("{op}: width {three_dim} is not 3 x a multiple of {heads} heads");
        }
        Ok(Self { batch, tokens, dim: three_dim / 3, heads })
    }

    fn head_dim(&self) -> usize {
        self.dim / self.heads
    }
}

/// `dst (m x n) = lhs (m x k) · rhs (k x n)` on one thread, each operand given by a pointer
/// and (row, column) strides.
///
/// # Safety
/// Every pointer must be valid for the elements its strides reach, and `dst` must not alias
/// `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn product<T: 'static>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    lhs: *const T,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const T,
    (rhs_rs, rhs_cs): (usize, usize),
    one: T,
    zero: T,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        zero,
        one,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Softmax of every row of `p` (`rows x cols`), in place.
fn softmax_rows<T: Exp>(p: &mut [T], cols: usize) {
    p.chunks_mut(cols).for_each(softmax_in_place);
}

/// One head's probabilities `softmax(q k^T)` into `p` (`tokens x tokens`).
fn head_probs<T: Exp>(qkv: &[T], d: Dims, h: usize, p: &mut [T]) {
    let (t, hd, row) = (d.tokens, d.head_dim(), 3 * d.dim);
    let q = qkv[h * hd..].as_ptr();
    let k = qkv[d.dim + h * hd..].as_ptr();
    // SAFETY: q and k rows are `row` apart within this image's `tokens x 3 dim` slice, head
    // columns stay inside it; p holds tokens^2 elements.
    unsafe { product((t, t, hd), p.as_mut_ptr(), t, q, (row, 1), k, (1, row), T::from_f64(1.0), T::from_f64(0.0)) };
    softmax_rows(p, t);
}

pub(crate) fn forward<T: Exp>(qkv: &[T], d: Dims) -> Vec<T> {
    let (t, hd, dim) = (d.tokens, d.head_dim(), d.dim);
    let mut out = vec![T::from_f64(0.0); d.batch * t * dim];
    out.par_chunks_mut(t * dim).zip(qkv.par_chunks(t * 3 * dim)).for_each(|(o, x)| {
        let mut p = vec![T::from_f64(0.0); t * t];
        for h in 0..d.heads {
            head_probs(x, d, h, &mut p);
            let v = x[2 * dim + h * hd..].as_ptr();
            // SAFETY: o is this image's `tokens x dim` output; head h writes columns
            // h*hd..(h+1)*hd of each row, v rows are `3 dim` apart inside x.
            unsafe {
                product(
                    (t, hd, t),
                    o[h * hd..].as_mut_ptr(),
                    dim,
                    p.as_ptr(),
                    (t, 1),
                    v,
                    (3 * dim, 1),
                    T::from_f64(1.0),
                    T::from_f64(0.0),
                )
            };
        }
    });
    out
}

pub(crate) fn backward<T: Exp>(qkv: &[T], g: &[T], d: Dims) -> Vec<T> {
    let (t, hd, dim) = (d.tokens, d.head_dim(), d.dim);
    let row = 3 * dim;
    let mut dqkv = vec![T::from_f64(0.0); qkv.len()];
    dqkv.par_chunks_mut(t * row).zip(qkv.par_chunks(t * row)).zip(g.par_chunks(t * dim)).for_each(|((dx, x), gi)| {
        let (one, zero) = (T::from_f64(1.0), T::from_f64(0.0));
        let mut p = vec![zero; t * t];
        let mut dp = vec![zero; t * t];
        for h in 0..d.heads {
            head_probs(x, d, h, &mut p);
            let (qc, kc, vc) = (h * hd, dim + h * hd, 2 * dim + h * hd);
            let go = gi[h * hd..].as_ptr();
            // SAFETY (all products below): operands are this image's slices with the row
            // strides of their layouts (`3 dim` for q/k/v and their gradients, `dim` for the
            // output gradient, `tokens` for p and dp); the written head columns are disjoint
            // from everything read in the same product.
            unsafe {
                // dV = P^T dO
                product((t, hd, t), dx[vc..].as_mut_ptr(), row, p.as_ptr(), (1, t), go, (dim, 1), one, zero);
                // dP = dO V^T
                product((t, t, hd), dp.as_mut_ptr(), t, go, (dim, 1), x[vc..].as_ptr(), (1, row), one, zero);
            }
            // dS = P ⊙ (dP - rowsum(P ⊙ dP)), written over dp.
            for (pr, dr) in p.chunks(t).zip(dp.chunks_mut(t)) {
                let dot: f64 = pr.iter().zip(dr.iter()).map(|(a, b)| a.to_f64() * b.to_f64()).sum();
                for (a, b) in pr.iter().zip(dr.iter_mut()) {
                    *b = T::from_f64(a.to_f64() * (b.to_f64() - dot));
                }
            }
            unsafe {
                // dQ = dS K
                product((t, hd, t), dx[qc..].as_mut_ptr(), row, dp.as_ptr(), (t, 1), x[kc..].as_ptr(), (row, 1), one, zero);
                // dK = dS^T Q
                product((t, hd, t), dx[kc..].as_mut_ptr(), row, dp.as_ptr(), (1, t), x[qc..].as_ptr(), (row, 1), one, zero);
            }
        }
    });
    dqkv
}

fn slice<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: input is not contiguous"),
    }
}

struct FusedAttention {
    num_heads: usize,
}

impl CustomOp1 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = Dims::new(self.name(), l, self.num_heads)?;
        let shape = Shape::from((d.batch, d.tokens, d.dim));
        match s {
            CpuStorage::F32(x) => Ok((CpuStorage::F32(forward(slice(x, l, self.name())?, d)), shape)),
            CpuStorage::F64(x) => Ok((CpuStorage::F64(forward(slice(x, l, self.name())?, d)), shape)),
            _ => bail!("{}: only f32 and f64 are supported", self.name()),
        }
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(qkv.apply_op2_no_bwd(&grad.contiguous()?, &FusedAttentionGrad { num_heads: self.num_heads })?))
    }
}

struct FusedAttentionGrad {
    num_heads: usize,
}

impl candle_core::CustomOp2 for FusedAttentionGrad {
    fn name(&self) -> &'static str {
        "fused-attention-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let d = Dims::new(op, l1, self.num_heads)?;
        if l2.dims() != [d.batch, d.tokens, d.dim] {
            bail!("{op}: gradient has shape {:?}, expected {:?}", l2.dims(), [d.batch, d.tokens, d.dim]);
        }
        match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                Ok((CpuStorage::F32(backward(slice(x, l1, op)?, slice(g, l2, op)?, d)), l1.shape().clone()))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                Ok((CpuStorage::F64(backward(slice(x, l1, op)?, slice(g, l2, op)?, d)), l1.shape().clone()))
            }
            _ => bail!("{op}: only f32 and f64 tensors of one dtype are supported"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::differentiable_softmax;
    use candle_core::{Device, Var};

    /// Attention composed of candle ops (matmul, softmax of differentiable ops), the reference.
    fn composed(qkv: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, t, three) = qkv.dims3()?;
        let dim = three / 3;
        let parts = qkv.reshape((b, t, 3, heads, dim / heads))?.permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (parts.get(0)?.contiguous()?, parts.get(1)?.contiguous()?, parts.get(2)?.contiguous()?);
        let p = differentiable_softmax(&q.matmul(&k.t()?)?)?;
        p.matmul(&v)?.transpose(1, 2)?.reshape((b, t, dim))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
    }

    /// Value and gradient equal the composed candle ops in f64 (whose gradients candle derives
    /// independently; the softmax's are checked by finite differences in `ops.rs`).
    #[test]
    fn matches_composed_attention_in_value_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        for (b, t, dim, heads) in [(3, 5, 8, 2), (2, 7, 12, 3), (1, 1, 4, 1)] {
            let qkv = Var::from_tensor(&Tensor::randn(0f64, 1.0, (b, t, 3 * dim), &dev)?)?;
            let dir = Tensor::randn(0f64, 1.0, (b, t, dim), &dev)?;
            let ours = attention(qkv.as_tensor(), heads)?;
            let reference = composed(qkv.as_tensor(), heads)?;
            assert!(max_diff(&ours, &reference) < 1e-12, "value differs for {:?}", (b, t, dim, heads));
            let g1 = (ours * &dir)?.sum_all()?.backward()?;
            let g2 = (reference * &dir)?.sum_all()?.backward()?;
            let (a, r) = (g1.get(qkv.as_tensor()).expect("gradient"), g2.get(qkv.as_tensor()).expect("gradient"));
            assert!(max_diff(a, r) < 1e-12, "gradient differs for {:?}", (b, t, dim, heads));
        }
        Ok(())
    }

    #[test]
    fn rejects_a_width_that_does_not_split_into_heads() {
        let x = Tensor::zeros((1, 2, 9), DType::F32, &Device::Cpu).unwrap();
        let err = attention(&x, 2).unwrap_err().to_string();
        assert!(err.contains("not 3 x a multiple of 2 heads"), "{err}");
    }
}
