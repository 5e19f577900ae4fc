//! The streaming adapter: adapt on a batch, then predict it with the adapted weights.

use std::sync::Arc;

use candle_core::{DType, Tensor, Var, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::adam::Adam;
use super::loss::{marginal_entropy, soft_contrastive_loss, tent_entropy};
use super::memory::ClassMemory;
use super::method::{ClipTtaConfig, MethodConfig, Reset, TentConfig};
use super::ood::{log_mcm_score, oce_loss};
use super::prediction::BatchPrediction;
use crate::error::{During, Error, Result};
use crate::model::{bind_to_thread, ClipModel, Grad, NormParams, NormSnapshot};

/// Counters over the adapter's life (since creation or the last load).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdaptStats {
    /// Batches processed.
    pub batches: u64,
    /// Images processed.
    pub images: u64,
    /// Optimiser steps taken.
    pub steps: u64,
    /// Steps skipped because the loss or a gradient was not finite (weights kept).
    pub skipped_steps: u64,
    /// Batches predicted without adaptation (fewer than two images).
    pub unadapted_batches: u64,
}

/// Adapts the vision LayerNorms of a shared [`ClipModel`] over a stream of batches and predicts
/// each batch after adapting on it (transductive, as in the official protocol).
#[derive(Debug)]
pub struct Adapter {
    pub(super) model: Arc<ClipModel>,
    pub(super) classes: Vec<String>,
    pub(super) templates: Vec<String>,
    pub(super) class_embeddings: Tensor,
    pub(super) method: MethodConfig,
    pub(super) params: NormParams,
    pub(super) initial: NormSnapshot,
    /// The open-set threshold, trained with the LayerNorms.
    pub(super) alpha: Var,
    pub(super) adam: Adam,
    pub(super) memory: ClassMemory,
    pub(super) rng: ChaCha8Rng,
    pub(super) stats: AdaptStats,
}

impl Drop for Adapter {
    fn drop(&mut self) {
        // The fields (device tensors) are freed after this, on whichever thread drops the
        // adapter; see `bind_to_thread`. A failure here has nowhere to go, and the next
        // operation on the device reports it.
        let _ = bind_to_thread(self.model.device());
    }
}

impl Adapter {
    /// An adapter over `classes`, whose prompts average `templates`.
    pub fn new(model: Arc<ClipModel>, classes: &[String], templates: &[String], method: MethodConfig) -> Result<Self> {
        let class_embeddings = model.class_embeddings(classes, templates)?;
        let params = model.vision().init_params()?;
        let initial = params.snapshot()?;
        let alpha = Var::zeros(1, model.dtype(), model.device())?;
        let adam_config = match &method {
            MethodConfig::ZeroShot { .. } => super::adam::AdamConfig::with_lr(0.0),
            MethodConfig::Tent(c) => c.adam,
            MethodConfig::Cliptta(c) => c.adam,
        };
        let (num_shots, sample_size, seed) = match &method {
            MethodConfig::Cliptta(c) => (c.num_shots, c.sample_size, c.seed),
            _ => (0, 0, 0),
        };
        let adam = Adam::new(adam_config, &trainable(&params, &alpha, method.open_set()))?;
        Ok(Self {
            memory: ClassMemory::new(classes.len(), num_shots, sample_size),
            model,
            classes: classes.to_vec(),
            templates: templates.to_vec(),
            class_embeddings,
            method,
            params,
            initial,
            alpha,
            adam,
            rng: ChaCha8Rng::seed_from_u64(seed),
            stats: AdaptStats::default(),
        })
    }

    /// The model adapted.
    pub fn model(&self) -> &Arc<ClipModel> {
        &self.model
    }

    /// Class names, in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Prompt templates.
    pub fn templates(&self) -> &[String] {
        &self.templates
    }

    /// The method and its settings.
    pub fn method(&self) -> &MethodConfig {
        &self.method
    }

    /// The adapted LayerNorm parameters.
    pub fn params(&self) -> &NormParams {
        &self.params
    }

    /// Counters.
    pub fn stats(&self) -> &AdaptStats {
        &self.stats
    }

    /// The class-wise memory (empty unless CLIPTTA with memory).
    pub fn memory(&self) -> &ClassMemory {
        &self.memory
    }

    /// The current open-set threshold (`None` in the closed set).
    pub fn threshold(&self) -> Result<Option<f32>> {
        if !self.method.open_set() {
            return Ok(None);
        }
        Ok(Some(self.alpha.as_tensor().to_dtype(DType::F32)?.to_vec1::<f32>()?[0]))
    }

    /// Returns the LayerNorms, optimiser, memory, threshold and sampler to their initial state.
    pub fn reset(&mut self) -> Result<()> {
        bind_to_thread(self.model.device())?;
        self.params.restore(&self.initial)?;
        self.adam.reset()?;
        self.memory.clear();
        self.alpha.set(&self.alpha.as_tensor().zeros_like()?)?;
        let seed = match &self.method {
            MethodConfig::Cliptta(c) => c.seed,
            _ => 0,
        };
        self.rng = ChaCha8Rng::seed_from_u64(seed);
        Ok(())
    }

    /// Adapts on `pixels` (`[batch, 3, size, size]`, preprocessed) as the method prescribes,
    /// then predicts every image with the adapted weights.
    pub fn adapt_and_predict(&mut self, pixels: &Tensor) -> Result<BatchPrediction> {
        // Callers move adapters between threads (tokio's blocking pool); this call frees last
        // batch's tensors before it launches anything.
        bind_to_thread(self.model.device())?;
        let n = pixels.dim(0)?;
        if n == 0 {
            return Ok(BatchPrediction::default());
        }
        if self.method.reset() == Reset::PerBatch {
            self.reset()?;
        }
        let mut losses = Vec::new();
        let adapts = !matches!(self.method, MethodConfig::ZeroShot { .. });
        if adapts && n < 2 {
            // One image gives no contrast, and maximising the marginal entropy of one
            // prediction only blurs it: predict without adapting.
            self.stats.unadapted_batches += 1;
        } else {
            let batch = self.stats.batches + 1;
            let step = |name: &str, losses: &[f32]| format!("{name} step {} of batch {batch}", losses.len() + 1);
            match self.method.clone() {
                MethodConfig::ZeroShot { .. } => {}
                MethodConfig::Tent(cfg) => {
                    let r = self.tent_batch(&cfg, pixels, &mut losses);
                    r.during(|| step("TENT", &losses))?
                }
                MethodConfig::Cliptta(cfg) => {
                    let r = self.cliptta_batch(&cfg, pixels, &mut losses);
                    r.during(|| step("CLIPTTA", &losses))?
                }
            }
        }
        self.stats.batches += 1;
        self.stats.images += n as u64;
        let batch = self.stats.batches;
        let mut out = self.predict(pixels).during(|| format!("prediction of batch {batch}"))?;
        out.losses = losses;
        Ok(out)
    }

    /// Predicts with the current weights, without adapting.
    pub fn predict(&self, pixels: &Tensor) -> Result<BatchPrediction> {
        let z = self.model.image_embeddings(pixels, &self.params, Grad::Disabled)?;
        let cos = z.matmul(&self.class_embeddings.t()?)?;
        let probs = candle_nn::ops::softmax_last_dim(&(&cos * self.method.logit_scale())?.contiguous()?)?;
        let labels = probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let confidence = probs.max(D::Minus1)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let ood_score = log_mcm_score(&cos)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let threshold = self.threshold()?;
        let is_ood = match threshold {
            Some(t) => ood_score.iter().map(|&s| s <= t).collect(),
            None => vec![false; labels.len()],
        };
        Ok(BatchPrediction {
            labels,
            confidence,
            probs: probs.to_dtype(DType::F32)?.to_vec2::<f32>()?,
            embeddings: z.to_dtype(DType::F32)?.to_vec2::<f32>()?,
            ood_score,
            is_ood,
            threshold,
            losses: Vec::new(),
        })
    }

    fn tent_batch(&mut self, cfg: &TentConfig, pixels: &Tensor, losses: &mut Vec<f32>) -> Result<()> {
        for _ in 0..cfg.steps {
            let z = self.model.image_embeddings(pixels, &self.params, Grad::Enabled)?;
            let mut loss = tent_entropy(&z, &self.class_embeddings, cfg.logit_scale)?;
            if cfg.beta_reg != 0.0 {
                loss = (loss - (marginal_entropy(&z, &self.class_embeddings, cfg.logit_scale)? * cfg.beta_reg)?)?;
            }
            losses.push(self.optimise(&loss)?);
        }
        Ok(())
    }

    fn cliptta_batch(&mut self, cfg: &ClipTtaConfig, pixels: &Tensor, losses: &mut Vec<f32>) -> Result<()> {
        let t = self.class_embeddings.clone();
        let scale = cfg.logit_scale;
        let device = pixels.device().clone();
        let n = pixels.dim(0)?;
        if cfg.open_set {
            // α restarts from the Otsu threshold of this batch's scores under the current weights.
            let z0 = self.model.image_embeddings(pixels, &self.params, Grad::Disabled)?;
            let scores = log_mcm_score(&z0.matmul(&t.t()?)?)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let alpha = cliptta_udfs::kernels::otsu_threshold(&scores)
                .ok_or_else(|| Error::InvalidInput("no finite OOD score in the batch".into()))?;
            self.alpha.set(&Tensor::new(&[alpha], &device)?.to_dtype(self.alpha.dtype())?)?;
        }
        for step in 0..cfg.steps {
            // After step 0 the memory no longer changes within the batch, so the replay sample
            // is drawn first and embedded in the same forward as the batch: one larger product
            // per layer instead of two. At step 0 the memory is first updated from this step's
            // predictions, so the replay gets its own forward. The draws from the sampler are
            // the same in both orders.
            let replay_first = cfg.use_memory && step > 0;
            let early_replay = if replay_first { self.memory.sample(&mut self.rng, &device)? } else { None };
            let (z, early_zm) = match &early_replay {
                Some(replay) => {
                    let both = Tensor::cat(&[pixels, replay], 0)?;
                    let z_all = self.model.image_embeddings(&both, &self.params, Grad::Enabled)?;
                    (z_all.narrow(0, 0, n)?, Some(z_all.narrow(0, n, replay.dim(0)?)?))
                }
                None => (self.model.image_embeddings(pixels, &self.params, Grad::Enabled)?, None),
            };
            let cos = z.matmul(&t.t()?)?;
            let mut loss = (marginal_entropy(&z, &t, scale)? * -cfg.beta_reg)?;
            let id_rows: Option<Vec<u32>> = if cfg.open_set {
                let scores = log_mcm_score(&cos)?;
                loss = (loss + (oce_loss(&scores, self.alpha.as_tensor(), cfg.gamma)? * cfg.beta_ood)?)?;
                let alpha = self.alpha.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
                let values = scores.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                Some((0..n as u32).filter(|&i| values[i as usize] > alpha).collect())
            } else {
                None
            };
            let select = |x: &Tensor| -> Result<Tensor> {
                Ok(match &id_rows {
                    None => x.clone(),
                    Some(rows) => x.index_select(&Tensor::new(rows.as_slice(), &device)?, 0)?,
                })
            };
            let id_count = id_rows.as_ref().map_or(n, Vec::len);
            if id_count > 0 {
                if let Some(lsc) = soft_contrastive_loss(&select(&z)?, &t, scale)? {
                    loss = (loss + (lsc * cfg.beta_tta)?)?;
                }
                if step == 0 && cfg.use_memory {
                    let cos_id = select(&cos.detach())?;
                    let labels = cos_id.argmax(D::Minus1)?.to_vec1::<u32>()?;
                    let conf = candle_nn::ops::softmax_last_dim(&cos_id.contiguous()?)?
                        .max(D::Minus1)?
                        .to_dtype(DType::F32)?
                        .to_vec1::<f32>()?;
                    self.memory.update(&select(pixels)?, &labels, &conf)?;
                }
            }
            let zm = if replay_first {
                early_zm
            } else if cfg.use_memory {
                match self.memory.sample(&mut self.rng, &device)? {
                    Some(replay) => Some(self.model.image_embeddings(&replay, &self.params, Grad::Enabled)?),
                    None => None,
                }
            } else {
                None
            };
            if let Some(zm) = zm {
                if let Some(lm) = soft_contrastive_loss(&zm, &t, scale)? {
                    loss = (loss + (lm * cfg.beta_tta)?)?;
                }
                loss = (loss - (marginal_entropy(&zm, &t, scale)? * cfg.beta_reg)?)?;
            }
            losses.push(self.optimise(&loss)?);
        }
        Ok(())
    }

    /// One guarded Adam step on the loss; returns its value, or NaN when skipped.
    fn optimise(&mut self, loss: &Tensor) -> Result<f32> {
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            self.stats.skipped_steps += 1;
            return Ok(f32::NAN);
        }
        let grads = loss.backward()?;
        let trainable = trainable(&self.params, &self.alpha, self.method.open_set());
        let mut gs = Vec::with_capacity(trainable.len());
        for var in &trainable {
            let g = match grads.get(var.as_tensor()) {
                Some(g) => g.clone(),
                None => var.as_tensor().zeros_like()?,
            };
            let norm = g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !norm.is_finite() {
                self.stats.skipped_steps += 1;
                return Ok(f32::NAN);
            }
            gs.push(g);
        }
        self.adam.step(&trainable, &gs)?;
        self.stats.steps += 1;
        Ok(value as f32)
    }
}

/// What Adam updates: the LayerNorm parameters, and the OOD threshold α in the open set.
fn trainable<'a>(params: &'a NormParams, alpha: &'a Var, open_set: bool) -> Vec<&'a Var> {
    let mut vars: Vec<&Var> = params.vars().iter().collect();
    if open_set {
        vars.push(alpha);
    }
    vars
}
