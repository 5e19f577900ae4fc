//! One pre-LN encoder block (LN1 → attention → add; LN2 → MLP → add) as a single CPU op whose
//! backward computes exactly what adaptation needs: the gradient of the block's input and of
//! its four LayerNorm tensors.
//!
//! Built from candle ops (even fused ones), a block is about twenty graph nodes, and candle's
//! backward pass gives every node's input gradient a fresh zero tensor and then adds into it
//! (`GradStore::or_insert`): on a ViT-B/32 batch that is tens of activation-sized allocations,
//! memsets and additions per block, plus a reshape node around every dense layer that costs the
//! same. Here the block keeps only the three activations its backward reads (the q/k/v
//! projection, the residual stream between the halves, the MLP's pre-activation), adds the
//! skip connections inside the products (gemm accumulates onto them), and its backward chains
//! the products and kernels of [`super::dense`], [`super::fused`] and
//! [`super::fused_attention`] with one buffer per intermediate.
//!
//! It serves vision-style blocks on CPU in f32/f64 with QuickGELU, no mask and frozen weights;
//! anything else (the text tower's causal mask, pretraining where weights are trained, other
//! devices) takes the composed path in `layers::EncoderLayer`.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Storage, Tensor};

use super::dense::{self, matmul_into, Rhs};
use super::fast_exp::Exp;
use super::fused;
use super::fused_attention::{self, Dims};

/// The frozen weights of one block, each dense weight stored transposed (`[in, out]`).
#[derive(Debug, Clone)]
pub(crate) struct BlockWeights {
    pub qkv_t: Tensor,
    pub qkv_b: Tensor,
    pub out_t: Tensor,
    pub out_b: Tensor,
    pub fc1_t: Tensor,
    pub fc1_b: Tensor,
    pub fc2_t: Tensor,
    pub fc2_b: Tensor,
    pub heads: usize,
    pub eps: f64,
}

impl BlockWeights {
    fn all(&self) -> [&Tensor; 8] {
        [&self.qkv_t, &self.qkv_b, &self.out_t, &self.out_b, &self.fc1_t, &self.fc1_b, &self.fc2_t, &self.fc2_b]
    }

    /// Whether the fused block can run `x` through these weights: CPU, f32/f64, and no weight
    /// that wants a gradient (its backward computes none).
    pub(crate) fn supported(&self, x: &Tensor) -> bool {
        x.device().is_cpu()
            && x.rank() == 3
            && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
            && self.all().iter().all(|w| w.dtype() == x.dtype() && w.device().is_cpu() && !w.track_op())
    }
}

/// Runs the block on `x: [batch, tokens, dim]` with `norms: [4 * dim]` holding LN1's weight and
/// bias, then LN2's. With `track`, the op records itself for backward and keeps what backward
/// reads; without, it keeps nothing.
pub(crate) fn block(x: &Tensor, norms: &Tensor, weights: &BlockWeights, track: bool) -> Result<Tensor> {
    let op = FusedBlock { weights: weights.clone(), saved: Mutex::new(None), keep: track };
    let (x, norms) = (x.contiguous()?, norms.contiguous()?);
    if track {
        x.apply_op2(&norms, op)
    } else {
        x.apply_op2_no_bwd(&norms, &op)
    }
}

/// What the backward pass reads, saved by the forward pass.
struct Saved<T> {
    qkv: Vec<T>,
    /// The residual stream after attention: LN2's input.
    mid: Vec<T>,
    /// fc1's output, QuickGELU's input.
    pre_act: Vec<T>,
}

enum SavedAny {
    F32(Saved<f32>),
    F64(Saved<f64>),
}

/// The element types the block runs in, with their place in candle's storage enum.
trait Elem: Exp {
    fn slice(storage: &CpuStorage) -> Option<&[Self]>;
    fn storage(data: Vec<Self>) -> CpuStorage;
    fn wrap(saved: Saved<Self>) -> SavedAny;
    fn unwrap(saved: &SavedAny) -> Option<&Saved<Self>>;
}

impl Elem for f32 {
    fn slice(storage: &CpuStorage) -> Option<&[Self]> {
        match storage {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn storage(data: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(data)
    }
    fn wrap(saved: Saved<Self>) -> SavedAny {
        SavedAny::F32(saved)
    }
    fn unwrap(saved: &SavedAny) -> Option<&Saved<Self>> {
        match saved {
            SavedAny::F32(s) => Some(s),
            SavedAny::F64(_) => None,
        }
    }
}

impl Elem for f64 {
    fn slice(storage: &CpuStorage) -> Option<&[Self]> {
        match storage {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn storage(data: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(data)
    }
    fn wrap(saved: Saved<Self>) -> SavedAny {
        SavedAny::F64(saved)
    }
    fn unwrap(saved: &SavedAny) -> Option<&Saved<Self>> {
        match saved {
            SavedAny::F64(s) => Some(s),
            SavedAny::F32(_) => None,
        }
    }
}

const OP: &str = "fused-block";

fn contiguous<'a, T: Elem>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [T]> {
    let Some(data) = T::slice(storage) else { bail!("{OP}: {what} is not {:?} like the input", T::DTYPE) };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{OP}: {what} is not contiguous"),
    }
}

/// Read guards on tensors' CPU storage, from which slices are borrowed.
struct Guards<'a>(Vec<(candle_core::StorageRef<'a>, &'a Layout)>);

impl<'a> Guards<'a> {
    fn new(tensors: &[&'a Tensor]) -> Self {
        Self(tensors.iter().map(|t| t.storage_and_layout()).collect())
    }

    fn slice<T: Elem>(&self, i: usize, what: &str) -> Result<&[T]> {
        let (storage, layout) = &self.0[i];
        match &**storage {
            Storage::Cpu(cpu) => contiguous(cpu, layout, what),
            _ => bail!("{OP}: {what} is not on the CPU"),
        }
    }
}

/// The block's frozen weights as slices, with the sizes they imply.
struct Frozen<'a, T> {
    qkv_t: &'a [T],
    qkv_b: &'a [T],
    out_t: &'a [T],
    out_b: &'a [T],
    fc1_t: &'a [T],
    fc1_b: &'a [T],
    fc2_t: &'a [T],
    fc2_b: &'a [T],
    dim: usize,
    hidden: usize,
}

impl<'a, T: Elem> Frozen<'a, T> {
    fn new(guards: &'a Guards<'_>, dim: usize) -> Result<Self> {
        let names = ["q/k/v weight", "q/k/v bias", "out weight", "out bias", "fc1 weight", "fc1 bias", "fc2 weight", "fc2 bias"];
        let s: Vec<&[T]> = names.iter().enumerate().map(|(i, n)| guards.slice(i, n)).collect::<Result<_>>()?;
        let hidden = s[5].len();
        let want = [dim * 3 * dim, 3 * dim, dim * dim, dim, dim * hidden, hidden, hidden * dim, dim];
        for ((slice, want), name) in s.iter().zip(want).zip(names) {
            if slice.len() != want {
                bail!("{OP}: {name} has {} elements, a block of width {dim} and MLP width {hidden} needs {want}", slice.len());
            }
        }
        Ok(Self {
            qkv_t: s[0],
            qkv_b: s[1],
            out_t: s[2],
            out_b: s[3],
            fc1_t: s[4],
            fc1_b: s[5],
            fc2_t: s[6],
            fc2_b: s[7],
            dim,
            hidden,
        })
    }
}

struct FusedBlock {
    weights: BlockWeights,
    keep: bool,
    saved: Mutex<Option<SavedAny>>,
}

impl FusedBlock {
    fn dims(&self, layout: &Layout) -> Result<Dims> {
        match layout.dims() {
            [batch, tokens, dim] => Ok(Dims { batch: *batch, tokens: *tokens, dim: *dim, heads: self.weights.heads }),
            d => bail!("{OP}: input must be [batch, tokens, dim], got {d:?}"),
        }
    }

    fn forward<T: Elem>(&self, x: &[T], norms: &[T], d: Dims) -> Result<Vec<T>> {
        let guards = Guards::new(&self.weights.all());
        let w = Frozen::<T>::new(&guards, d.dim)?;
        let (dim, hidden, rows, eps) = (w.dim, w.hidden, d.batch * d.tokens, self.weights.eps);
        if norms.len() != 4 * dim {
            bail!("{OP}: {} LayerNorm values, a block of width {dim} needs {}", norms.len(), 4 * dim);
        }
        if d.heads == 0 || dim % d.heads != 0 {
            bail!("{OP}: width {dim} does not split into {} heads", d.heads);
        }
        let ln = |i: usize| &norms[i * dim..(i + 1) * dim];

        let normed = fused::ln_forward(x, ln(0), ln(1), eps);
        let qkv = dense::product(&normed, w.qkv_t, Some(w.qkv_b), (rows, dim, 3 * dim));
        drop(normed);
        let heads = fused_attention::forward(&qkv, d);
        let mut mid = dense::rows_plus_bias(Some(x), w.out_b, rows);
        matmul_into(&mut mid, true, &heads, Rhs::Plain(w.out_t), (rows, dim, dim));
        drop(heads);

        let normed = fused::ln_forward(&mid, ln(2), ln(3), eps);
        let pre_act = dense::product(&normed, w.fc1_t, Some(w.fc1_b), (rows, dim, hidden));
        drop(normed);
        let act = fused::quick_gelu_forward(&pre_act);
        let mut out = dense::rows_plus_bias(Some(&mid), w.fc2_b, rows);
        matmul_into(&mut out, true, &act, Rhs::Plain(w.fc2_t), (rows, hidden, dim));

        if self.keep {
            *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(T::wrap(Saved { qkv, mid, pre_act }));
        }
        Ok(out)
    }

    /// Gradients of the input and of the four LayerNorm tensors (`[4 * dim]`), given the
    /// output's.
    fn backward<T: Elem>(&self, x: &[T], norms: &[T], grad: &[T], saved: &Saved<T>, d: Dims) -> Result<(Vec<T>, Vec<T>)> {
        let guards = Guards::new(&self.weights.all());
        let w = Frozen::<T>::new(&guards, d.dim)?;
        let (dim, hidden, rows, eps) = (w.dim, w.hidden, d.batch * d.tokens, self.weights.eps);
        if grad.len() != x.len() {
            bail!("{OP}: output gradient has {} elements, the input {}", grad.len(), x.len());
        }
        let ln = |i: usize| &norms[i * dim..(i + 1) * dim];
        let zeros = |n: usize| vec![T::from_f64(0.0); n];

        // MLP half: out = mid + fc2(gelu(fc1(LN2(mid)))).
        let mut g_act = zeros(rows * hidden);
        matmul_into(&mut g_act, false, grad, Rhs::Transposed(w.fc2_t), (rows, dim, hidden));
        fused::quick_gelu_grad_in_place(&saved.pre_act, &mut g_act);
        let mut g_normed = zeros(rows * dim);
        matmul_into(&mut g_normed, false, &g_act, Rhs::Transposed(w.fc1_t), (rows, hidden, dim));
        drop(g_act);
        let mut g_mid = grad.to_vec();
        fused::ln_grad_x_add(&saved.mid, ln(2), &g_normed, eps, &mut g_mid);
        let ln2 = fused::ln_grad_wb(&saved.mid, &g_normed, dim, eps);

        // Attention half: mid = x + out_proj(attention(qkv(LN1(x)))).
        // Products below overwrite their destination (no accumulate): the buffers are reused as is.
        let mut g_heads = g_normed;
        matmul_into(&mut g_heads, false, &g_mid, Rhs::Transposed(w.out_t), (rows, dim, dim));
        let g_qkv = fused_attention::backward(&saved.qkv, &g_heads, d);
        let mut g_normed = g_heads;
        matmul_into(&mut g_normed, false, &g_qkv, Rhs::Transposed(w.qkv_t), (rows, 3 * dim, dim));
        drop(g_qkv);
        let mut g_x = g_mid;
        fused::ln_grad_x_add(x, ln(0), &g_normed, eps, &mut g_x);
        let mut g_norms = fused::ln_grad_wb(x, &g_normed, dim, eps);
        g_norms.extend(ln2);
        Ok((g_x, g_norms))
    }

    fn typed_bwd<T: Elem>(&self, x: &Tensor, norms: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let guard = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        let Some(saved) = guard.as_ref().and_then(T::unwrap) else {
            bail!("{OP}: backward without the activations of a tracked forward pass")
        };
        let grad = grad.contiguous()?;
        let d = self.dims(x.layout())?;
        let guards = Guards::new(&[x, norms, &grad]);
        let (g_x, g_norms) =
            self.backward(guards.slice::<T>(0, "input")?, guards.slice(1, "norms")?, guards.slice(2, "gradient")?, saved, d)?;
        let g_x = Tensor::from_vec(g_x, x.shape(), x.device())?;
        let g_norms = Tensor::from_vec(g_norms, norms.shape(), norms.device())?;
        Ok((Some(g_x), Some(g_norms)))
    }
}

impl CustomOp2 for FusedBlock {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = self.dims(l1)?;
        let out = match s1 {
            CpuStorage::F32(_) => f32::storage(self.forward::<f32>(contiguous(s1, l1, "input")?, contiguous(s2, l2, "norms")?, d)?),
            CpuStorage::F64(_) => f64::storage(self.forward::<f64>(contiguous(s1, l1, "input")?, contiguous(s2, l2, "norms")?, d)?),
            _ => bail!("{OP}: only f32 and f64 are supported"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, norms: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        match x.dtype() {
            candle_core::DType::F32 => self.typed_bwd::<f32>(x, norms, grad),
            candle_core::DType::F64 => self.typed_bwd::<f64>(x, norms, grad),
            dt => bail!("{OP}: dtype {dt:?} is not supported (f32, f64)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Var};

    use super::*;
    use crate::model::activation::Activation;
    use crate::model::layers::{EncoderLayer, Norm};
    use crate::model::ops::Grad;
    use crate::model::weights::TensorMap;

    const EPS: f64 = 1e-5;

    fn random_layer(dim: usize, hidden: usize, heads: usize, dtype: DType) -> EncoderLayer {
        let dev = Device::Cpu;
        let mut tensors = HashMap::new();
        let mut put = |name: &str, shape: &[usize]| {
            let t = Tensor::randn(0f64, 0.3, shape, &dev).unwrap().to_dtype(dtype).unwrap();
            tensors.insert(name.to_string(), t);
        };
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            put(&format!("self_attn.{p}.weight"), &[dim, dim]);
            put(&format!("self_attn.{p}.bias"), &[dim]);
        }
        put("mlp.fc1.weight", &[hidden, dim]);
        put("mlp.fc1.bias", &[hidden]);
        put("mlp.fc2.weight", &[dim, hidden]);
        put("mlp.fc2.bias", &[dim]);
        let map = TensorMap { label: "random".into(), tensors };
        EncoderLayer::new(dim, hidden, heads, Activation::QuickGelu, map.root()).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    struct Case {
        x: Var,
        norms: Vec<Var>,
        dir: Tensor,
    }

    fn case(batch: usize, tokens: usize, dim: usize, dtype: DType) -> Case {
        let dev = Device::Cpu;
        let r = |mean: f64, shape: &[usize]| Tensor::randn(mean, 0.5, shape, &dev).unwrap().to_dtype(dtype).unwrap();
        Case {
            x: Var::from_tensor(&r(0.0, &[batch, tokens, dim])).unwrap(),
            norms: vec![
                Var::from_tensor(&r(1.0, &[dim])).unwrap(),
                Var::from_tensor(&r(0.0, &[dim])).unwrap(),
                Var::from_tensor(&r(1.0, &[dim])).unwrap(),
                Var::from_tensor(&r(0.0, &[dim])).unwrap(),
            ],
            dir: r(0.0, &[batch, tokens, dim]),
        }
    }

    fn run(layer: &EncoderLayer, c: &Case, fused: bool) -> Tensor {
        let n = |i: usize| Norm { weight: c.norms[2 * i].as_tensor(), bias: c.norms[2 * i + 1].as_tensor(), eps: EPS };
        if fused {
            layer.forward(c.x.as_tensor(), n(0), n(1), None, Grad::Enabled).unwrap()
        } else {
            layer.forward_composed(c.x.as_tensor(), n(0), n(1), None, Grad::Enabled).unwrap()
        }
    }

    /// The fused block equals the composed block (separately tested ops whose gradients candle
    /// derives) in value and in the gradients of the input and all four LayerNorm tensors, f64.
    #[test]
    fn matches_the_composed_block_in_value_and_gradients() {
        for (batch, tokens, dim, hidden, heads) in [(3, 5, 8, 32, 2), (2, 7, 12, 20, 3), (1, 1, 4, 16, 1)] {
            let layer = random_layer(dim, hidden, heads, DType::F64);
            let c = case(batch, tokens, dim, DType::F64);
            assert!(layer.is_fused_for(c.x.as_tensor(), None), "the fused path runs");
            let (ours, reference) = (run(&layer, &c, true), run(&layer, &c, false));
            let value = max_diff(&ours, &reference);
            assert!(value < 1e-12, "value differs by {value} for {:?}", (batch, tokens, dim, heads));
            let g_ours = (ours * &c.dir).unwrap().sum_all().unwrap().backward().unwrap();
            let g_ref = (reference * &c.dir).unwrap().sum_all().unwrap().backward().unwrap();
            for (what, v) in std::iter::once(("x", &c.x)).chain(["ln1.w", "ln1.b", "ln2.w", "ln2.b"].into_iter().zip(&c.norms)) {
                let (a, r) = (g_ours.get(v.as_tensor()).expect("fused gradient"), g_ref.get(v.as_tensor()).expect("gradient"));
                let diff = max_diff(a, r);
                assert!(diff < 1e-10, "d/d{what} differs by {diff} for {:?}", (batch, tokens, dim, heads));
            }
        }
    }

    /// The gradient of `sum(block(x) * dir)` along a random direction in LN2's weight equals a
    /// central finite difference of the fused forward itself (f64, step 1e-5).
    #[test]
    fn gradient_matches_finite_differences() {
        let layer = random_layer(8, 24, 2, DType::F64);
        let c = case(2, 4, 8, DType::F64);
        let loss = |c: &Case| (run(&layer, c, true) * &c.dir).unwrap().sum_all().unwrap();
        let grads = loss(&c).backward().unwrap();
        let target = &c.norms[2];
        let v = Tensor::randn(0f64, 1.0, 8, &Device::Cpu).unwrap();
        let analytic = (grads.get(target.as_tensor()).unwrap() * &v).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let base = target.as_tensor().copy().unwrap();
        let h = 1e-5;
        let at = |s: f64| {
            target.set(&(&base + (&v * s).unwrap()).unwrap()).unwrap();
            loss(&c).to_scalar::<f64>().unwrap()
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        assert!((analytic - numeric).abs() < 1e-7 * (1.0 + numeric.abs()), "analytic {analytic} vs numeric {numeric}");
    }

    /// f32 runs the same path and agrees with the composed block to f32 precision; without
    /// tracking it records nothing.
    #[test]
    fn f32_agrees_and_untracked_records_no_graph() {
        let layer = random_layer(16, 64, 4, DType::F32);
        let c = case(2, 9, 16, DType::F32);
        let diff = max_diff(&run(&layer, &c, true), &run(&layer, &c, false));
        assert!(diff < 1e-4, "{diff}");
        let n = |i: usize| Norm { weight: c.norms[2 * i].as_tensor(), bias: c.norms[2 * i + 1].as_tensor(), eps: EPS };
        let y = layer.forward(c.x.as_tensor(), n(0), n(1), None, Grad::Disabled).unwrap();
        assert!(!y.track_op());
    }

    /// Trained weights (pretraining) need weight gradients, which the fused block does not
    /// compute: such a layer takes the composed path and its weights get gradients.
    #[test]
    fn trained_weights_take_the_composed_path() {
        let dim = 8;
        let weights = Var::from_tensor(&Tensor::randn(0f32, 0.3, (dim, dim), &Device::Cpu).unwrap()).unwrap();
        let mut tensors = HashMap::new();
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            tensors.insert(format!("self_attn.{p}.weight"), weights.as_tensor().clone());
            tensors.insert(format!("self_attn.{p}.bias"), Tensor::zeros(dim, DType::F32, &Device::Cpu).unwrap());
        }
        for (n, shape) in [("fc1.weight", (dim, dim)), ("fc2.weight", (dim, dim))] {
            tensors.insert(format!("mlp.{n}"), Tensor::randn(0f32, 0.3, shape, &Device::Cpu).unwrap());
        }
        tensors.insert("mlp.fc1.bias".into(), Tensor::zeros(dim, DType::F32, &Device::Cpu).unwrap());
        tensors.insert("mlp.fc2.bias".into(), Tensor::zeros(dim, DType::F32, &Device::Cpu).unwrap());
        let map = TensorMap { label: "trained".into(), tensors };
        let layer = EncoderLayer::new(dim, dim, 2, Activation::QuickGelu, map.root()).unwrap();
        let c = case(1, 3, dim, DType::F32);
        assert!(!layer.is_fused_for(c.x.as_tensor(), None));
        let grads = run(&layer, &c, true).sum_all().unwrap().backward().unwrap();
        assert!(grads.get(weights.as_tensor()).is_some(), "the shared weight got a gradient");
    }
}
