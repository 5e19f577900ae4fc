//! The text tower (`text_model.*` and `text_projection`), frozen; used once per label set.

use candle_core::{DType, Tensor};

use super::config::TextConfig;
use super::layers::{load_norm, EncoderLayer, Linear, Norm};
use super::ops::Grad;
use super::weights::Weights;
use crate::error::{Error, Result};

/// CLIP's causal text transformer with its projection into the joint embedding space.
#[derive(Debug)]
pub struct TextTower {
    config: TextConfig,
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    /// (layer_norm1, layer_norm2) of each block.
    norms: Vec<[(Tensor, Tensor); 2]>,
    final_norm: (Tensor, Tensor),
    projection: Linear,
}

impl TextTower {
    pub(crate) fn new(cfg: &TextConfig, projection_dim: usize, root: Weights<'_>) -> Result<Self> {
        let w = root.pp("text_model");
        let d = cfg.hidden_size;
        let emb = w.pp("embeddings");
        let token_embedding = emb.pp("token_embedding").get(&[cfg.vocab_size, d], "weight")?;
        let position_embedding = emb.pp("position_embedding").get(&[cfg.max_position_embeddings, d], "weight")?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        let mut norms = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let lw = w.pp("encoder.layers").pp(i);
            layers.push(EncoderLayer::new(d, cfg.intermediate_size, cfg.num_attention_heads, cfg.activation, lw.clone())?);
            norms.push([load_norm(d, lw.pp("layer_norm1"))?, load_norm(d, lw.pp("layer_norm2"))?]);
        }
        let final_norm = load_norm(d, w.pp("final_layer_norm"))?;
        let projection = Linear::new(d, projection_dim, false, root.pp("text_projection"))?;
        Ok(Self { config: cfg.clone(), token_embedding, position_embedding, layers, norms, final_norm, projection })
    }

    /// The tower's configuration.
    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    /// Projected (not normalised) text features `[batch, projection_dim]` for token id sequences,
    /// each at most the context length and ending with its end-of-text token.
    pub fn forward(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        self.forward_with(ids, Grad::Disabled)
    }

    /// [`TextTower::forward`] with a choice of gradient tracking (pretraining trains this tower).
    pub fn forward_with(&self, ids: &[Vec<u32>], grad: Grad) -> Result<Tensor> {
        let cfg = &self.config;
        let device = self.token_embedding.device();
        let batch = ids.len();
        let len = ids.iter().map(Vec::len).max().unwrap_or(0);
        if batch == 0 || len == 0 {
            return Err(Error::InvalidInput("no text to encode".into()));
        }
        if len > cfg.max_position_embeddings {
            return Err(Error::InvalidInput(format!(
                "token sequence of length {len} exceeds the context length {}",
                cfg.max_position_embeddings
            )));
        }
        let mut flat = Vec::with_capacity(batch * len);
        let mut pooled_rows = Vec::with_capacity(batch);
        for (b, seq) in ids.iter().enumerate() {
            if let Some(&bad) = seq.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                return Err(Error::InvalidInput(format!("token id {bad} is outside the vocabulary of {}", cfg.vocab_size)));
            }
            pooled_rows.push((b * len + self.pool_position(seq)) as u32);
            // Padding sits after the end-of-text token; the causal mask keeps it out of the
            // pooled feature, so its value does not matter.
            flat.extend(seq.iter().copied().chain(std::iter::repeat(0).take(len - seq.len())));
        }
        let ids_t = Tensor::from_vec(flat, batch * len, device)?;
        let x = self
            .token_embedding
            .index_select(&ids_t, 0)?
            .reshape((batch, len, cfg.hidden_size))?
            .broadcast_add(&self.position_embedding.narrow(0, 0, len)?)?;
        let mask = causal_mask(len, x.dtype(), device)?;
        let eps = cfg.layer_norm_eps;
        let mut x = x;
        for (layer, [n1, n2]) in self.layers.iter().zip(&self.norms) {
            let norm1 = Norm { weight: &n1.0, bias: &n1.1, eps };
            let norm2 = Norm { weight: &n2.0, bias: &n2.1, eps };
            x = layer.forward(&x, norm1, norm2, Some(&mask), grad)?;
        }
        let rows = Tensor::from_vec(pooled_rows, batch, device)?;
        let pooled = x.reshape((batch * len, cfg.hidden_size))?.index_select(&rows, 0)?;
        let pooled = Norm { weight: &self.final_norm.0, bias: &self.final_norm.1, eps }.forward(&pooled, grad)?;
        Ok(self.projection.forward(&pooled)?)
    }

    /// Where the sequence feature is read, as in transformers: the first end-of-text token, or
    /// with the legacy `eos_token_id == 2`, the highest token id.
    fn pool_position(&self, seq: &[u32]) -> usize {
        if self.config.eos_token_id == 2 {
            let max = seq.iter().copied().max().unwrap_or(0);
            seq.iter().position(|&t| t == max).unwrap_or(0)
        } else {
            seq.iter().position(|&t| t == self.config.eos_token_id).unwrap_or(seq.len() - 1)
        }
    }
}

fn causal_mask(len: usize, dtype: DType, device: &candle_core::Device) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> =
        (0..len).flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(mask, (len, len), device)?.to_dtype(dtype)
}

impl TextTower {
    pub(crate) fn dtype(&self) -> DType {
        self.token_embedding.dtype()
    }
}
