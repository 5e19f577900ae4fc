//! The blocks both CLIP towers are made of, holding frozen weights only.
//!
//! LayerNorm parameters are passed into `forward` rather than stored, because the vision tower's
//! LayerNorms belong to whoever adapts them ([`super::NormParams`]).

use candle_core::{Result as CResult, Tensor};

use super::activation::Activation;
use super::dense;
use super::fused_attention;
use super::fused_block::{self, BlockWeights};
use super::ops::{layer_norm, softmax, Grad};
use super::weights::Weights;
use crate::error::Result;

/// A dense layer `x W^T + b`, with `W^T` stored contiguously for the matrix product.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn new(in_dim: usize, out_dim: usize, bias: bool, w: Weights<'_>) -> Result<Self> {
        let weight = w.get(&[out_dim, in_dim], "weight")?;
        let bias = if bias { Some(w.get(&[out_dim], "bias")?) } else { None };
        Ok(Self { weight_t: weight.t()?.contiguous()?, bias })
    }

    /// The same layer with its output multiplied by `factor` (folded into weight and bias).
    pub(crate) fn scaled(&self, factor: f64) -> Result<Self> {
        let bias = match &self.bias {
            Some(b) => Some((b * factor)?),
            None => None,
        };
        Ok(Self { weight_t: (&self.weight_t * factor)?, bias })
    }

    /// Fuses several layers reading the same input into one wider matrix product.
    pub(crate) fn concat(parts: &[Linear]) -> Result<Self> {
        let weights: Vec<&Tensor> = parts.iter().map(|p| &p.weight_t).collect();
        let weight_t = Tensor::cat(&weights, 1)?;
        let bias = match parts.iter().map(|p| p.bias.as_ref()).collect::<Option<Vec<_>>>() {
            Some(biases) => Some(Tensor::cat(&biases, 0)?),
            None => None,
        };
        Ok(Self { weight_t, bias })
    }

    fn parts(&self) -> Option<(Tensor, Tensor)> {
        Some((self.weight_t.clone(), self.bias.clone()?))
    }

    /// Applies the layer to `[.., in_dim]`.
    pub(crate) fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim;
        let x = x.reshape((rows, in_dim))?;
        let y = if dense::supported(&x, &self.weight_t) {
            dense::linear(&x, &self.weight_t, self.bias.as_ref())?
        } else {
            let y = x.matmul(&self.weight_t)?;
            match &self.bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            }
        };
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = self.weight_t.dim(1)?;
        y.reshape(out_dims)
    }
}

/// Borrowed weight and bias of one LayerNorm.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Norm<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub eps: f64,
}

impl Norm<'_> {
    pub(crate) fn forward(&self, x: &Tensor, grad: Grad) -> CResult<Tensor> {
        layer_norm(x, self.weight, self.bias, self.eps, grad)
    }
}

/// Multi-head self-attention with fused q/k/v projections (`self_attn.*`).
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    qkv: Linear,
    out_proj: Linear,
    num_heads: usize,
}

impl Attention {
    pub(crate) fn new(dim: usize, num_heads: usize, w: Weights<'_>) -> Result<Self> {
        let q = Linear::new(dim, dim, true, w.pp("q_proj"))?;
        let k = Linear::new(dim, dim, true, w.pp("k_proj"))?;
        let v = Linear::new(dim, dim, true, w.pp("v_proj"))?;
        let out_proj = Linear::new(dim, dim, true, w.pp("out_proj"))?;
        let head_dim = dim / num_heads;
        // The attention scale is folded into the query projection: one pass fewer per layer.
        let q = q.scaled((head_dim as f64).powf(-0.5))?;
        Ok(Self { qkv: Linear::concat(&[q, k, v])?, out_proj, num_heads })
    }

    /// `x`: `[batch, tokens, dim]`; `mask`: additive `[tokens, tokens]` (causal for text).
    pub(crate) fn forward(&self, x: &Tensor, mask: Option<&Tensor>, grad: Grad) -> CResult<Tensor> {
        let (batch, tokens, dim) = x.dims3()?;
        let head_dim = dim / self.num_heads;
        let qkv = self.qkv.forward(x)?;
        if mask.is_none() && fused_attention::supported(&qkv) {
            return self.out_proj.forward(&fused_attention::attention(&qkv, self.num_heads)?);
        }
        let qkv = qkv
            .reshape((batch, tokens, 3, self.num_heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scores = q.matmul(&k.t()?)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let attn = softmax(&scores, grad)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((batch, tokens, dim))?;
        self.out_proj.forward(&out)
    }
}

/// The two-layer MLP of a block (`mlp.fc1`, `mlp.fc2`).
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Mlp {
    pub(crate) fn new(dim: usize, hidden: usize, activation: Activation, w: Weights<'_>) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(dim, hidden, true, w.pp("fc1"))?,
            fc2: Linear::new(hidden, dim, true, w.pp("fc2"))?,
            activation,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        self.fc2.forward(&self.activation.apply(&self.fc1.forward(x)?)?)
    }
}

/// A pre-LN residual block (`encoder.layers.N`): LN1 → attention → add; LN2 → MLP → add.
#[derive(Debug, Clone)]
pub(crate) struct EncoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    /// The same weights for the one-op block, when its shape of block allows it (QuickGELU,
    /// biases everywhere).
    fused: Option<BlockWeights>,
}

impl EncoderLayer {
    pub(crate) fn new(
        dim: usize,
        hidden: usize,
        num_heads: usize,
        activation: Activation,
        w: Weights<'_>,
    ) -> Result<Self> {
        let self_attn = Attention::new(dim, num_heads, w.pp("self_attn"))?;
        let mlp = Mlp::new(dim, hidden, activation, w.pp("mlp"))?;
        let fused = Self::block_weights(&self_attn, &mlp);
        Ok(Self { self_attn, mlp, fused })
    }

    fn block_weights(attn: &Attention, mlp: &Mlp) -> Option<BlockWeights> {
        if mlp.activation != Activation::QuickGelu {
            return None;
        }
        let ((qkv_t, qkv_b), (out_t, out_b)) = (attn.qkv.parts()?, attn.out_proj.parts()?);
        let ((fc1_t, fc1_b), (fc2_t, fc2_b)) = (mlp.fc1.parts()?, mlp.fc2.parts()?);
        // eps is per call (it comes with the norms); filled in by `forward`.
        Some(BlockWeights { qkv_t, qkv_b, out_t, out_b, fc1_t, fc1_b, fc2_t, fc2_b, heads: attn.num_heads, eps: 0.0 })
    }

    pub(crate) fn forward(
        &self,
        x: &Tensor,
        norm1: Norm<'_>,
        norm2: Norm<'_>,
        mask: Option<&Tensor>,
        grad: Grad,
    ) -> CResult<Tensor> {
        match &self.fused {
            Some(weights) if self.is_fused_for(x, mask) && norm1.eps == norm2.eps => {
                let weights = BlockWeights { eps: norm1.eps, ..weights.clone() };
                let norms = Tensor::cat(&[norm1.weight, norm1.bias, norm2.weight, norm2.bias], 0)?;
                fused_block::block(x, &norms, &weights, grad == Grad::Enabled)
            }
            _ => self.forward_composed(x, norm1, norm2, mask, grad),
        }
    }

    /// Whether [`Self::forward`] runs as one fused op for this input and mask.
    pub(crate) fn is_fused_for(&self, x: &Tensor, mask: Option<&Tensor>) -> bool {
        mask.is_none() && self.fused.as_ref().is_some_and(|w| w.supported(x))
    }

    /// The block as a composition of per-layer ops: the path for masks, trained weights and
    /// devices other than the CPU, and the reference the fused block is tested against.
    pub(crate) fn forward_composed(
        &self,
        x: &Tensor,
        norm1: Norm<'_>,
        norm2: Norm<'_>,
        mask: Option<&Tensor>,
        grad: Grad,
    ) -> CResult<Tensor> {
        let h = (self.self_attn.forward(&norm1.forward(x, grad)?, mask, grad)? + x)?;
        self.mlp.forward(&norm2.forward(&h, grad)?)? + h
    }
}

/// Loads a LayerNorm's `weight` and `bias` (`[dim]` each).
pub(crate) fn load_norm(dim: usize, w: Weights<'_>) -> Result<(Tensor, Tensor)> {
    Ok((w.get(&[dim], "weight")?, w.get(&[dim], "bias")?))
}
