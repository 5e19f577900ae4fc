//! CLIPTTA: soft contrastive adaptation of the vision LayerNorms over the batch's
//! pseudo-captions, with a marginal-entropy regulariser and a class-wise confident memory; in
//! the open set, log-MCM scores, a per-batch Otsu threshold trained as a scalar, and the OCE
//! loss (docs/method.md).

use std::path::Path;

use candle_core::{DType, Tensor, Var, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::tent::{validate_adam, ADAM_SETTINGS, RESET_LAYER_NORMS, STEPS};
use super::{load_adam, optimise, save_adam, scaled_logits, AdaptContext, BuildContext, MethodSettings, MethodState, Setting, TtaMethod};
use crate::error::{Error, Result};
use crate::model::Grad;
use crate::tta::adam::{Adam, AdamConfig};
use crate::tta::loss::{marginal_entropy, soft_contrastive_loss, LossSum, StepLoss};
use crate::tta::memory::ClassMemory;
use crate::tta::ood::{log_mcm_score, oce_loss};
use crate::tta::reset::Reset;

/// CLIPTTA's settings, closed or open set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTtaConfig {
    /// Optimisation steps per batch (10).
    pub steps: usize,
    /// Adam settings (lr 1e-4, eps 1e-6).
    pub adam: AdamConfig,
    /// Logit scale of the contrastive and regulariser softmaxes (100).
    pub logit_scale: f64,
    /// Weight of the soft contrastive terms (1).
    pub beta_tta: f64,
    /// Weight of the marginal-entropy regulariser (1).
    pub beta_reg: f64,
    /// Whether to replay the class-wise confident memory.
    pub use_memory: bool,
    /// Memory capacity per class (4 closed set, 16 open set).
    pub num_shots: usize,
    /// Memory replay size per step (40 closed set, 128 open set).
    pub sample_size: usize,
    /// Open set: OOD scores, Otsu threshold, OCE loss, ID filtering.
    pub open_set: bool,
    /// Weight of the OCE loss (1).
    pub beta_ood: f64,
    /// Temperature of the soft ID weights (0.005).
    pub gamma: f64,
    /// Seed of the memory sampler.
    pub seed: u64,
    /// Reset policy.
    pub reset: Reset,
}

impl MethodSettings for ClipTtaConfig {
    const SETTINGS: &'static [Setting] = &[
        STEPS,
        ADAM_SETTINGS[0],
        ADAM_SETTINGS[1],
        ADAM_SETTINGS[2],
        ADAM_SETTINGS[3],
        Setting { name: "logit_scale", doc: "scale of the cosines in the contrastive and regulariser softmaxes" },
        Setting { name: "beta_tta", doc: "weight of the soft contrastive terms" },
        Setting { name: "beta_reg", doc: "weight of the marginal-entropy regulariser" },
        Setting { name: "use_memory", doc: "replay the class-wise confident memory" },
        Setting { name: "num_shots", doc: "memory images per class (4 closed set, 16 open set; CIFAR-100 scripts 16)" },
        Setting { name: "sample_size", doc: "memory images replayed per step (40 closed set, 128 open set)" },
        Setting { name: "beta_ood", doc: "weight of the OCE loss (open set)" },
        Setting { name: "gamma", doc: "temperature of the soft ID weights in the OCE loss (open set)" },
        Setting { name: "seed", doc: "seed of the memory sampler" },
        RESET_LAYER_NORMS,
    ];

    const HAS_OPEN_SET: bool = true;

    /// The CIFAR-10 script settings, closed or open set.
    fn official(open_set: bool) -> Self {
        Self {
            steps: 10,
            adam: AdamConfig::with_lr(1e-4),
            logit_scale: 100.0,
            beta_tta: 1.0,
            beta_reg: 1.0,
            use_memory: true,
            num_shots: if open_set { 16 } else { 4 },
            sample_size: if open_set { 128 } else { 40 },
            open_set,
            beta_ood: 1.0,
            gamma: 0.005,
            seed: 42,
            reset: Reset::Never,
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        validate_adam(&self.adam)?;
        if self.gamma <= 0.0 {
            return Err(format!("`gamma` = {} is not a positive number", self.gamma));
        }
        Ok(())
    }

    fn reset(&self) -> Reset {
        self.reset
    }

    fn open_set(&self) -> bool {
        self.open_set
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn TtaMethod>> {
        let alpha = Var::zeros(1, cx.model.dtype(), cx.model.device())?;
        let mut vars: Vec<&Var> = cx.params.vars().iter().collect();
        if self.open_set {
            vars.push(&alpha);
        }
        let adam = Adam::new(self.adam, &vars)?;
        Ok(Box::new(ClipTta {
            memory: ClassMemory::new(cx.num_classes, self.num_shots, self.sample_size),
            rng: ChaCha8Rng::seed_from_u64(self.seed),
            config: self.clone(),
            alpha,
            adam,
        }))
    }
}

#[derive(Debug)]
struct ClipTta {
    config: ClipTtaConfig,
    /// The open-set threshold, trained with the LayerNorms.
    alpha: Var,
    adam: Adam,
    memory: ClassMemory,
    rng: ChaCha8Rng,
}

impl TtaMethod for ClipTta {
    fn min_adapt_batch(&self) -> usize {
        // One image gives no contrast.
        2
    }

    fn adapt(&mut self, cx: &mut AdaptContext<'_>, pixels: &Tensor, steps: &mut Vec<StepLoss>) -> Result<()> {
        let cfg = self.config.clone();
        let t = cx.class_embeddings.clone();
        let scale = cfg.logit_scale;
        let device = pixels.device().clone();
        let n = pixels.dim(0)?;
        if cfg.open_set {
            // α restarts from the Otsu threshold of this batch's scores under the current weights.
            let z0 = cx.model.image_embeddings(pixels, cx.params, Grad::Disabled)?;
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
                    let z_all = cx.model.image_embeddings(&both, cx.params, Grad::Enabled)?;
                    (z_all.narrow(0, 0, n)?, Some(z_all.narrow(0, n, replay.dim(0)?)?))
                }
                None => (cx.model.image_embeddings(pixels, cx.params, Grad::Enabled)?, None),
            };
            let cos = z.matmul(&t.t()?)?;
            let mut loss = LossSum::default();
            loss.add("marginal_entropy", (marginal_entropy(&z, &t, scale)? * -cfg.beta_reg)?)?;
            let id_rows: Option<Vec<u32>> = if cfg.open_set {
                let scores = log_mcm_score(&cos)?;
                loss.add("oce", (oce_loss(&scores, self.alpha.as_tensor(), cfg.gamma)? * cfg.beta_ood)?)?;
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
                    loss.add("soft_contrastive", (lsc * cfg.beta_tta)?)?;
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
                    Some(replay) => Some(cx.model.image_embeddings(&replay, cx.params, Grad::Enabled)?),
                    None => None,
                }
            } else {
                None
            };
            if let Some(zm) = zm {
                if let Some(lm) = soft_contrastive_loss(&zm, &t, scale)? {
                    loss.add("memory_soft_contrastive", (lm * cfg.beta_tta)?)?;
                }
                loss.add("memory_marginal_entropy", (marginal_entropy(&zm, &t, scale)? * -cfg.beta_reg)?)?;
            }
            let mut vars: Vec<&Var> = cx.params.vars().iter().collect();
            if cfg.open_set {
                vars.push(&self.alpha);
            }
            steps.push(optimise(&mut self.adam, &vars, &loss, cx.stats)?);
        }
        Ok(())
    }

    fn logits(&self, _z: &Tensor, cos: &Tensor) -> Result<Tensor> {
        scaled_logits(cos, self.config.logit_scale)
    }

    fn threshold(&self) -> Result<Option<f32>> {
        if !self.config.open_set {
            return Ok(None);
        }
        Ok(Some(self.alpha.as_tensor().to_dtype(DType::F32)?.to_vec1::<f32>()?[0]))
    }

    fn kept(&self) -> usize {
        self.memory.len()
    }

    fn reset(&mut self) -> Result<()> {
        self.adam.reset()?;
        self.memory.clear();
        self.alpha.set(&self.alpha.as_tensor().zeros_like()?)?;
        self.rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        Ok(())
    }

    fn save(&self, state: &mut MethodState) -> Result<()> {
        save_adam(&self.adam, state);
        state.tensors.insert("alpha".into(), self.alpha.as_tensor().copy()?);
        if let Some((images, labels, conf)) = self.memory.to_tensors()? {
            state.tensors.insert("memory.images".into(), images);
            state.tensors.insert("memory.labels".into(), labels);
            state.tensors.insert("memory.confidence".into(), conf);
        }
        // The sampler's position in its stream, as a decimal string (u128 does not fit JSON numbers).
        state.info.insert("rng_word_pos".into(), self.rng.get_word_pos().to_string().into());
        Ok(())
    }

    fn load(&mut self, state: &MethodState, path: &Path) -> Result<()> {
        load_adam(&mut self.adam, state, path)?;
        self.alpha.set(&state.tensor("alpha", path)?.to_dtype(self.alpha.dtype())?)?;
        let t = &state.tensors;
        match (t.get("memory.images"), t.get("memory.labels"), t.get("memory.confidence")) {
            (Some(i), Some(l), Some(c)) => self.memory.load_tensors(&i.to_dtype(self.alpha.dtype())?, l, c)?,
            _ => self.memory.clear(),
        }
        let word_pos: String = state.value("rng_word_pos", path)?;
        let word_pos: u128 = word_pos.parse().map_err(|_| Error::config(path, "saved state: `rng_word_pos` is not an integer"))?;
        self.rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        self.rng.set_word_pos(word_pos);
        Ok(())
    }
}
