//! SAR (Niu et al., ICLR 2023) as the official CLIPTTA repository runs it
//! (`ttavlm/methods/sar.py`, `ttavlm/optimizers/sam.py`, checked against
//! `tests/fixtures/sar-reference.json`): entropy minimisation on the vision LayerNorms over the
//! reliable images only (entropy below `alpha_entropy · ln K`), with a sharpness-aware step
//! (SAM over Adam: climb `rho` along the normalised gradient, take the gradient there among the
//! images still reliable, step from where it started), and model recovery: when the moving
//! average of that loss is below `recovery_threshold`, the LayerNorms return to the
//! checkpoint's values.
//!
//! Copied from the official code as it runs: recovery restores the LayerNorms but neither
//! Adam's moments nor the moving average (so once below the threshold, every step recovers
//! until the average rises); an empty selection has a NaN loss, zero gradients and no
//! perturbation, leaves the average as it is, and Adam still steps.

use std::path::Path;

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::tent::{validate_adam, ADAM_SETTINGS, RESET_LAYER_NORMS, STEPS};
use super::{load_adam, max_prob_scores, save_adam, scaled_logits, AdaptContext, BuildContext, MethodSettings, MethodState, Setting, TtaMethod};
use crate::error::Result;
use crate::model::Grad;
use crate::tta::adam::{Adam, AdamConfig};
use crate::tta::loss::{row_entropies, LossTerm, StepLoss};
use crate::tta::reset::Reset;

/// SAR's settings: the official argparse defaults (no script sets them) with SAM on, which SAR
/// needs (`--use_sam`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SarConfig {
    /// Optimisation steps per batch (1).
    pub steps: usize,
    /// The base optimiser: Adam (lr 1e-3, eps 1e-6).
    pub adam: AdamConfig,
    /// SAM's neighbourhood radius (0.05).
    pub rho: f64,
    /// Reliable images have entropy below `alpha_entropy · ln K` (0.4).
    pub alpha_entropy: f64,
    /// The moving average of the loss below which the LayerNorms are recovered (0.2).
    pub recovery_threshold: f64,
    /// Logit scale of the softmax (100).
    pub logit_scale: f64,
    /// Reset policy.
    pub reset: Reset,
}

impl MethodSettings for SarConfig {
    const SETTINGS: &'static [Setting] = &[
        STEPS,
        ADAM_SETTINGS[0],
        ADAM_SETTINGS[1],
        ADAM_SETTINGS[2],
        ADAM_SETTINGS[3],
        Setting { name: "rho", doc: "radius of SAM's sharpness-aware perturbation" },
        Setting { name: "alpha_entropy", doc: "reliable images have entropy below alpha_entropy · ln(classes)" },
        Setting { name: "recovery_threshold", doc: "loss moving average below which the LayerNorms return to the checkpoint" },
        Setting { name: "logit_scale", doc: "scale of the cosines in the softmax" },
        RESET_LAYER_NORMS,
    ];

    fn official(_open_set: bool) -> Self {
        Self {
            steps: 1,
            adam: AdamConfig::with_lr(1e-3),
            rho: 0.05,
            alpha_entropy: 0.4,
            recovery_threshold: 0.2,
            logit_scale: 100.0,
            reset: Reset::Never,
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        validate_adam(&self.adam)?;
        if self.rho < 0.0 {
            return Err(format!("`rho` = {} is negative", self.rho));
        }
        Ok(())
    }

    fn reset(&self) -> Reset {
        self.reset
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn TtaMethod>> {
        let vars: Vec<&Var> = cx.params.vars().iter().collect();
        Ok(Box::new(Sar { optimizer: SarOptimizer::new(self.clone(), &vars, cx.num_classes)? }))
    }
}

/// What one SAR step did.
#[derive(Debug, Clone, PartialEq)]
pub struct SarStep {
    /// Mean entropy of the reliable images at the current weights (NaN when none is).
    pub loss_first: f64,
    /// The reliable images, as batch rows.
    pub reliable: Vec<u32>,
    /// The norm of the first gradient (SAM's scale is `rho / (norm + 1e-12)`).
    pub grad_norm: f64,
    /// Among `reliable`, the positions still reliable at the perturbed weights.
    pub kept: Vec<u32>,
    /// Mean entropy of those at the perturbed weights (NaN when none is): the loss stepped on.
    pub loss_second: f64,
    /// Whether the LayerNorms were recovered after the step.
    pub recovered: bool,
}

/// SAR's optimiser: SAM over Adam, with the loss's moving average that triggers recovery.
#[derive(Debug)]
pub struct SarOptimizer {
    config: SarConfig,
    adam: Adam,
    margin: f64,
    ema: Option<f64>,
}

/// Rows of `values` below `margin`.
fn below(values: &Tensor, margin: f64) -> Result<Vec<u32>> {
    let v = values.detach().to_dtype(DType::F64)?.to_vec1::<f64>()?;
    Ok(v.iter().enumerate().filter(|(_, x)| **x < margin).map(|(i, _)| i as u32).collect())
}

fn select(x: &Tensor, rows: &[u32]) -> Result<Tensor> {
    Ok(if rows.is_empty() { x.narrow(0, 0, 0)? } else { x.index_select(&Tensor::new(rows, x.device())?, 0)? })
}

/// The mean of `h`'s entries and the gradients of it for `vars`: NaN and zeros when `h` is
/// empty, as torch's mean of an empty tensor and its backward.
fn mean_and_gradients(h: &Tensor, vars: &[&Var]) -> Result<(f64, Vec<Tensor>)> {
    let zeros = || vars.iter().map(|v| v.as_tensor().zeros_like()).collect::<candle_core::Result<Vec<_>>>();
    if h.dim(0)? == 0 {
        return Ok((f64::NAN, zeros()?));
    }
    let loss = h.mean_all()?;
    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let grads = loss.backward()?;
    let gs = vars.iter().map(|v| grads.get(v.as_tensor()).cloned().map_or_else(|| v.as_tensor().zeros_like(), Ok)).collect::<candle_core::Result<_>>()?;
    Ok((value, gs))
}

fn sum_of_squares(gs: &[Tensor]) -> Result<f64> {
    let mut total = 0.0;
    for g in gs {
        total += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    }
    Ok(total)
}

impl SarOptimizer {
    /// Fresh state over `vars` for `num_classes` classes.
    pub fn new(config: SarConfig, vars: &[&Var], num_classes: usize) -> Result<Self> {
        Ok(Self { adam: Adam::new(config.adam, vars)?, margin: config.alpha_entropy * (num_classes as f64).ln(), config, ema: None })
    }

    /// The loss's moving average (`None` before the first non-NaN loss).
    pub fn ema(&self) -> Option<f64> {
        self.ema
    }

    /// One step on `vars`, whose checkpoint values are `initial`; `entropies` gives the
    /// per-image entropies `[n]` at the current values of `vars`, differentiably. `None` when a
    /// gradient was not finite (the weights are kept).
    pub fn step(&mut self, vars: &[&Var], initial: &[Tensor], entropies: impl Fn() -> Result<Tensor>) -> Result<Option<SarStep>> {
        let h1 = entropies()?;
        let reliable = below(&h1, self.margin)?;
        let (loss_first, g1) = mean_and_gradients(&select(&h1, &reliable)?, vars)?;
        let norm2 = sum_of_squares(&g1)?;
        if !norm2.is_finite() {
            return Ok(None);
        }
        let grad_norm = norm2.sqrt();
        let scale = self.config.rho / (grad_norm + 1e-12);
        let start: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
        for (v, g) in vars.iter().zip(&g1) {
            v.set(&(v.as_tensor() + (g * scale)?)?)?;
        }
        let h2 = select(&entropies()?, &reliable)?;
        let kept = below(&h2, self.margin)?;
        let (loss_second, g2) = mean_and_gradients(&select(&h2, &kept)?, vars)?;
        if !loss_second.is_nan() {
            self.ema = Some(self.ema.map_or(loss_second, |old| 0.9 * old + 0.1 * loss_second));
        }
        for (v, s) in vars.iter().zip(&start) {
            v.set(s)?;
        }
        if !sum_of_squares(&g2)?.is_finite() {
            return Ok(None);
        }
        self.adam.step(vars, &g2)?;
        let recovered = self.ema.is_some_and(|e| e < self.config.recovery_threshold);
        if recovered {
            for (v, t) in vars.iter().zip(initial) {
                v.set(&t.to_dtype(v.dtype())?.to_device(v.device())?)?;
            }
        }
        Ok(Some(SarStep { loss_first, reliable, grad_norm, kept, loss_second, recovered }))
    }
}

#[derive(Debug)]
struct Sar {
    optimizer: SarOptimizer,
}

impl TtaMethod for Sar {
    fn adapt(&mut self, cx: &mut AdaptContext<'_>, pixels: &Tensor, steps: &mut Vec<StepLoss>) -> Result<()> {
        let scale = self.optimizer.config.logit_scale;
        let vars: Vec<&Var> = cx.params.vars().iter().collect();
        for _ in 0..self.optimizer.config.steps {
            let (model, params, t) = (cx.model, cx.params, cx.class_embeddings);
            let entropies = || -> Result<Tensor> {
                let z = model.image_embeddings(pixels, params, Grad::Enabled)?;
                Ok(row_entropies(&(z.matmul(&t.t()?)? * scale)?)?)
            };
            match self.optimizer.step(&vars, cx.initial.tensors(), entropies)? {
                Some(step) => {
                    cx.stats.steps += 1;
                    cx.stats.recoveries += u64::from(step.recovered);
                    // SAR steps on the second pass's entropy; the first pass's is its own number.
                    let terms = vec![LossTerm { name: "reliable_entropy", value: step.loss_second as f32 }];
                    steps.push(StepLoss { loss: step.loss_second as f32, terms });
                }
                None => {
                    cx.stats.skipped_steps += 1;
                    steps.push(StepLoss::skipped());
                }
            }
        }
        Ok(())
    }

    fn logits(&self, _z: &Tensor, cos: &Tensor) -> Result<Tensor> {
        scaled_logits(cos, self.optimizer.config.logit_scale)
    }

    fn ood_scores(&self, cos: &Tensor, _logits: &Tensor) -> Result<Tensor> {
        max_prob_scores(cos)
    }

    fn reset(&mut self) -> Result<()> {
        self.optimizer.adam.reset()?;
        self.optimizer.ema = None;
        Ok(())
    }

    fn save(&self, state: &mut MethodState) -> Result<()> {
        save_adam(&self.optimizer.adam, state);
        state.info.insert("sar_ema".into(), self.optimizer.ema.into());
        Ok(())
    }

    fn load(&mut self, state: &MethodState, path: &Path) -> Result<()> {
        load_adam(&mut self.optimizer.adam, state, path)?;
        self.optimizer.ema = state.value("sar_ema", path)?;
        Ok(())
    }
}
