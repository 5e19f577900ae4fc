//! The vision tower (`vision_model.*` and `visual_projection`), frozen except for the LayerNorms,
//! whose values come from a [`NormParams`] at every forward.

use candle_core::{Tensor, D};

use super::config::VisionConfig;
use super::layers::{load_norm, EncoderLayer, Linear, Norm};
use super::norm_params::NormParams;
use super::ops::Grad;
use super::weights::Weights;
use crate::error::{Error, Result};

/// CLIP's ViT image encoder with its projection into the joint embedding space.
#[derive(Debug)]
pub struct VisionTower {
    config: VisionConfig,
    class_embedding: Tensor,
    /// The patch convolution as a matrix `[channels * patch * patch, hidden]`.
    patch_weight_t: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    initial_norms: Vec<(String, Tensor)>,
    projection: Linear,
}

impl VisionTower {
    pub(crate) fn new(cfg: &VisionConfig, projection_dim: usize, root: Weights<'_>) -> Result<Self> {
        let w = root.pp("vision_model");
        let d = cfg.hidden_size;
        let p = cfg.patch_size;
        let c = cfg.num_channels;
        let emb = w.pp("embeddings");
        let class_embedding = emb.get(&[d], "class_embedding")?;
        let patch = emb.pp("patch_embedding").get(&[d, c, p, p], "weight")?;
        let patch_weight_t = patch.reshape((d, c * p * p))?.t()?.contiguous()?;
        let position_embedding = emb.pp("position_embedding").get(&[cfg.num_positions(), d], "weight")?;

        let mut initial_norms = Vec::with_capacity(2 * cfg.num_layer_norms());
        let mut push_norm = |prefix: &str, w: Weights<'_>| -> Result<()> {
            let (weight, bias) = load_norm(d, w)?;
            initial_norms.push((format!("vision_model.{prefix}.weight"), weight));
            initial_norms.push((format!("vision_model.{prefix}.bias"), bias));
            Ok(())
        };
        push_norm("pre_layrnorm", w.pp("pre_layrnorm"))?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let lw = w.pp("encoder.layers").pp(i);
            layers.push(EncoderLayer::new(d, cfg.intermediate_size, cfg.num_attention_heads, cfg.activation, lw.clone())?);
            push_norm(&format!("encoder.layers.{i}.layer_norm1"), lw.pp("layer_norm1"))?;
            push_norm(&format!("encoder.layers.{i}.layer_norm2"), lw.pp("layer_norm2"))?;
        }
        push_norm("post_layernorm", w.pp("post_layernorm"))?;
        let projection = Linear::new(d, projection_dim, false, root.pp("visual_projection"))?;
        Ok(Self {
            config: cfg.clone(),
            class_embedding,
            patch_weight_t,
            position_embedding,
            layers,
            initial_norms,
            projection,
        })
    }

    /// The tower's configuration.
    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    /// A fresh set of adaptable LayerNorm parameters holding the checkpoint's values.
    pub fn init_params(&self) -> Result<NormParams> {
        NormParams::new(&self.initial_norms)
    }

    /// The checkpoint's LayerNorm tensors themselves as a parameter set, without copying: when
    /// they are `Var`s (pretraining), gradients reach them.
    pub fn shared_params(&self) -> Result<NormParams> {
        NormParams::shared(&self.initial_norms)
    }

    /// Projected (not normalised) image features `[batch, projection_dim]` for preprocessed
    /// pixels `[batch, channels, image_size, image_size]`.
    pub fn forward(&self, pixels: &Tensor, params: &NormParams, grad: Grad) -> Result<Tensor> {
        let cfg = &self.config;
        let dims = pixels.dims();
        let want = [cfg.num_channels, cfg.image_size, cfg.image_size];
        if dims.len() != 4 || dims[1..] != want {
            return Err(Error::InvalidInput(format!(
                "pixels have shape {dims:?}, the vision tower needs [batch, {}, {}, {}]",
                want[0], want[1], want[2]
            )));
        }
        if params.vars().len() != self.initial_norms.len() {
            return Err(Error::InvalidInput(format!(
                "LayerNorm parameter set has {} tensors, this tower needs {}",
                params.vars().len(),
                self.initial_norms.len()
            )));
        }
        let batch = dims[0];
        let (p, g, c, d) = (cfg.patch_size, cfg.patches_per_side(), cfg.num_channels, cfg.hidden_size);
        let pixels = pixels.to_dtype(self.patch_weight_t.dtype())?;
        let patches = pixels
            .reshape((batch, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((batch * g * g, c * p * p))?
            .matmul(&self.patch_weight_t)?
            .reshape((batch, g * g, d))?;
        let cls = self.class_embedding.reshape((1, 1, d))?.broadcast_as((batch, 1, d))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        let eps = cfg.layer_norm_eps;
        let norm = |i: usize| {
            let (weight, bias) = params.norm(i);
            Norm { weight, bias, eps }
        };
        let mut x = norm(0).forward(&x, grad)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, norm(1 + 2 * i), norm(2 + 2 * i), None, grad)?;
        }
        let pooled = x.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = norm(cfg.num_layer_norms() - 1).forward(&pooled, grad)?;
        Ok(self.projection.forward(&pooled)?)
    }
}

/// L2-normalises rows (differentiable).
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}
