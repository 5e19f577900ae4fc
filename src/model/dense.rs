//! Dense layers on CPU: `x W^T + b` as one matrix product with the bias fused in, whose backward
//! computes weight and bias gradients only when they are trainable.
//!
//! candle's matmul backward always computes the gradient of both operands. During adaptation
//! every weight is frozen, so that second product (as costly as the forward one) and the
//! weight-sized gradient it allocates are pure waste: about a third of a ViT's backward FLOPs.
//! The bias add fused into the product also saves one activation-sized tensor per layer, which
//! candle would otherwise keep alive for the backward pass.
//!
//! The product goes through the `gemm` crate, the kernel candle's own CPU matmul calls.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};

/// `x [rows, in] · weight_t [in, out] (+ bias [out])`, differentiable in all three.
///
/// `x` must be two-dimensional; `weight_t` is the transposed weight, contiguous.
pub(crate) fn linear(x: &Tensor, weight_t: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let x = x.contiguous()?;
    let weight_t = weight_t.contiguous()?;
    match bias {
        Some(b) => x.apply_op3(&weight_t, &b.contiguous()?, DenseWithBias),
        None => x.apply_op2(&weight_t, Dense),
    }
}

/// Whether [`linear`] can run on these tensors.
pub(crate) fn supported(x: &Tensor, weight_t: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && x.dtype() == weight_t.dtype()
}

/// Checks shapes and returns `(rows, in, out)`.
fn dims(op: &str, x: &Layout, w: &Layout, bias: Option<&Layout>) -> Result<(usize, usize, usize)> {
    let (rows, inner) = match x.dims() {
        [r, i] => (*r, *i),
        d => bail!("{op}: input must be [rows, in], got {d:?}"),
    };
    let out = match w.dims() {
        [i, o] if *i == inner => *o,
        d => bail!("{op}: weight must be [{inner}, out], got {d:?}"),
    };
    if let Some(b) = bias {
        if b.dims() != [out] {
            bail!("{op}: bias must be [{out}], got {:?}", b.dims());
        }
    }
    Ok((rows, inner, out))
}

fn slice<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: operand is not contiguous"),
    }
}

/// The product itself, for f32 and f64.
pub(crate) fn product<T: WithDType>(x: &[T], w: &[T], bias: Option<&[T]>, (rows, inner, out): (usize, usize, usize)) -> Vec<T> {
    // The bias pre-fills the destination and gemm accumulates into it (read_dst), so the add
    // costs no extra pass over the output.
    let mut dst = match bias {
        Some(b) => rows_plus_bias(None, b, rows),
        None => vec![T::from_f64(0.0); rows * out],
    };
    matmul_into(&mut dst, bias.is_some(), x, Rhs::Plain(w), (rows, inner, out));
    dst
}

/// `rows` rows of `bias`, each plus the matching row of `residual` when there is one: the
/// starting value of a product that accumulates onto bias and skip connection at once.
pub(crate) fn rows_plus_bias<T: WithDType>(residual: Option<&[T]>, bias: &[T], rows: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(rows * bias.len());
    match residual {
        Some(r) => {
            for row in r.chunks(bias.len()) {
                v.extend(row.iter().zip(bias).map(|(a, b)| *a + *b));
            }
        }
        None => {
            for _ in 0..rows {
                v.extend_from_slice(bias);
            }
        }
    }
    v
}

/// The right operand of [`matmul_into`], row-major.
#[derive(Clone, Copy)]
pub(crate) enum Rhs<'a, T> {
    /// `[inner, out]` as stored.
    Plain(&'a [T]),
    /// The transpose of a stored `[out, inner]` matrix: a dense layer's input gradient uses its
    /// stored `W^T` transposed, without copying it.
    Transposed(&'a [T]),
}

/// `dst [rows, out] (+)= x [rows, inner] · rhs`, all row-major, on candle's thread count.
/// With `accumulate`, the product is added to what `dst` holds.
///
/// # Panics
/// When a slice's length differs from its dimensions: callers size them from the same numbers.
pub(crate) fn matmul_into<T: WithDType>(
    dst: &mut [T],
    accumulate: bool,
    x: &[T],
    rhs: Rhs<'_, T>,
    (rows, inner, out): (usize, usize, usize),
) {
    let (w, rhs_cs, rhs_rs) = match rhs {
        Rhs::Plain(w) => (w, 1, out),
        Rhs::Transposed(w) => (w, inner, 1),
    };
    assert!(x.len() == rows * inner && w.len() == inner * out && dst.len() == rows * out, "matmul_into: sizes");
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the assert above ties every slice's length to the dimensions, and the strides
    // describe row-major matrices of exactly those dimensions (or the transpose of one).
    unsafe {
        gemm::gemm(
            rows,
            out,
            inner,
            dst.as_mut_ptr(),
            1,
            out as isize,
            accumulate,
            x.as_ptr(),
            1,
            inner as isize,
            w.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::from_f64(1.0),
            T::from_f64(1.0),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Gradients of a dense layer: always the input's; the weight's and bias's only when tracked.
fn backward(
    x: &Tensor,
    weight_t: &Tensor,
    bias: Option<&Tensor>,
    grad: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let dx = if x.track_op() { Some(grad.matmul(&weight_t.t()?)?) } else { None };
    let dw = if weight_t.track_op() { Some(x.t()?.matmul(grad)?) } else { None };
    let db = match bias {
        Some(b) if b.track_op() => Some(grad.sum(0)?),
        _ => None,
    };
    Ok((dx, dw, db))
}

struct Dense;

impl CustomOp2 for Dense {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = dims(self.name(), l1, l2, None)?;
        let shape = Shape::from((d.0, d.2));
        match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                Ok((CpuStorage::F32(product(slice(x, l1, "dense")?, slice(w, l2, "dense")?, None, d)), shape))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                Ok((CpuStorage::F64(product(slice(x, l1, "dense")?, slice(w, l2, "dense")?, None, d)), shape))
            }
            _ => bail!("dense: only f32 and f64 operands of one dtype are supported"),
        }
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = backward(x, w, None, grad)?;
        Ok((dx, dw))
    }
}

struct DenseWithBias;

impl CustomOp3 for DenseWithBias {
    fn name(&self) -> &'static str {
        "dense-with-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let d = dims(op, l1, l2, Some(l3))?;
        let shape = Shape::from((d.0, d.2));
        match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => Ok((
                CpuStorage::F32(product(slice(x, l1, op)?, slice(w, l2, op)?, Some(slice(b, l3, op)?), d)),
                shape,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => Ok((
                CpuStorage::F64(product(slice(x, l1, op)?, slice(w, l2, op)?, Some(slice(b, l3, op)?), d)),
                shape,
            )),
            _ => bail!("{op}: only f32 and f64 operands of one dtype are supported"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        backward(x, w, Some(b), grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
    }

    /// Value and every gradient equal candle's own matmul + broadcast add (f64), which candle's
    /// backward differentiates independently of this module.
    #[test]
    fn matches_candle_matmul_in_value_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (7, 5), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f64, 1.0, (5, 3), &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f64, 1.0, 3, &dev)?)?;
        let dir = Tensor::randn(0f64, 1.0, (7, 3), &dev)?;

        let ours = linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()))?;
        let reference = x.as_tensor().matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
        assert!(max_diff(&ours, &reference) < 1e-12);

        let g_ours = (ours * &dir)?.sum_all()?.backward()?;
        let g_ref = (reference * &dir)?.sum_all()?.backward()?;
        for v in [&x, &w, &b] {
            let (a, r) = (g_ours.get(v.as_tensor()).expect("gradient"), g_ref.get(v.as_tensor()).expect("gradient"));
            assert!(max_diff(a, r) < 1e-12, "gradient differs");
        }

        let no_bias = linear(x.as_tensor(), w.as_tensor(), None)?;
        assert!(max_diff(&no_bias, &x.as_tensor().matmul(w.as_tensor())?) < 1e-12);
        Ok(())
    }

    /// A frozen weight gets no gradient (that is the point), the input still does.
    #[test]
    fn frozen_weights_get_no_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 6), &dev)?)?;
        let w = Tensor::randn(0f32, 1.0, (6, 2), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 2, &dev)?;
        let grads = linear(x.as_tensor(), &w, Some(&b))?.sum_all()?.backward()?;
        assert!(grads.get(x.as_tensor()).is_some());
        assert!(grads.get(&w).is_none() && grads.get(&b).is_none());
        Ok(())
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((4, 6), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((5, 2), DType::F32, &dev).unwrap();
        let err = linear(&x, &w, None).unwrap_err().to_string();
        assert!(err.contains("weight must be [6, out]"), "{err}");
    }
}
