//! UniEnt (Gao et al., 2024), the open-set baseline of the official CLIPTTA scripts
//! (`ttavlm/methods/unient.py`, `scripts/open_set/*/unient.sh`): TENT whose per-image entropy is
//! weighted by how in-distribution the image looks. Each step splits the batch with a
//! two-component Gaussian mixture over `1 − minmax(max softmax(s·cos))`; the posterior of the
//! lower component weighs the entropy, and the marginal entropy is maximised as in TENT's
//! open-set scripts. With `use_ood_loss` the entropy of the other component's images is
//! maximised too (off in the scripts).

use std::path::Path;

use candle_core::{DType, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use super::tent::{validate_adam, ADAM_SETTINGS, RESET_LAYER_NORMS, STEPS};
use super::{load_adam, max_prob_scores, optimise, save_adam, scaled_logits, AdaptContext, BuildContext, MethodSettings, MethodState, Setting, TtaMethod};
use crate::error::{Error, Result};
use crate::model::Grad;
use crate::tta::adam::{Adam, AdamConfig};
use crate::tta::gmm::{fit_two_gaussians, Mixture};
use crate::tta::loss::{marginal_entropy, row_entropies, LossSum, StepLoss};
use crate::tta::reset::Reset;

/// UniEnt's settings (the open-set scripts': lr 1e-4, beta_tta 1, beta_reg 1, 10 steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UniEntConfig {
    /// Optimisation steps per batch (10).
    pub steps: usize,
    /// Adam settings (lr 1e-4).
    pub adam: AdamConfig,
    /// Logit scale of the softmaxes (100).
    pub logit_scale: f64,
    /// Weight of the ID-weighted entropy (1).
    pub beta_tta: f64,
    /// Weight of the marginal entropy, maximised (1).
    pub beta_reg: f64,
    /// Also maximise the OOD-weighted entropy (off in the scripts).
    pub use_ood_loss: bool,
    /// Weight of the OOD-weighted entropy when `use_ood_loss` (1).
    pub beta_ood: f64,
    /// Open set: flag images as OOD by the mixture's split of the final scores.
    pub open_set: bool,
    /// Reset policy.
    pub reset: Reset,
}

impl MethodSettings for UniEntConfig {
    const SETTINGS: &'static [Setting] = &[
        STEPS,
        ADAM_SETTINGS[0],
        ADAM_SETTINGS[1],
        ADAM_SETTINGS[2],
        ADAM_SETTINGS[3],
        Setting { name: "logit_scale", doc: "scale of the cosines in the softmaxes" },
        Setting { name: "beta_tta", doc: "weight of the ID-weighted entropy" },
        Setting { name: "beta_reg", doc: "weight of the marginal entropy (maximised)" },
        Setting { name: "use_ood_loss", doc: "also maximise the entropy of the images the mixture calls OOD" },
        Setting { name: "beta_ood", doc: "weight of the OOD-weighted entropy" },
        RESET_LAYER_NORMS,
    ];

    const HAS_OPEN_SET: bool = true;

    fn official(open_set: bool) -> Self {
        Self {
            steps: 10,
            adam: AdamConfig::with_lr(1e-4),
            logit_scale: 100.0,
            beta_tta: 1.0,
            beta_reg: 1.0,
            use_ood_loss: false,
            beta_ood: 1.0,
            open_set,
            reset: Reset::Never,
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        validate_adam(&self.adam)
    }

    fn reset(&self) -> Reset {
        self.reset
    }

    fn open_set(&self) -> bool {
        self.open_set
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn TtaMethod>> {
        let vars: Vec<&Var> = cx.params.vars().iter().collect();
        Ok(Box::new(UniEnt { adam: Adam::new(self.adam, &vars)?, config: self.clone() }))
    }
}

/// UniEnt's split of a batch: per image the weight of the in-distribution component and of the
/// other, from cosines `[n, classes]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UniEntWeights {
    /// Posterior of the component with the lower OOD-score mean.
    pub id: Vec<f64>,
    /// Posterior of the other component.
    pub ood: Vec<f64>,
    /// The fitted mixture (`None` when every image scored alike: then both weights are ½).
    pub mixture: Option<Mixture>,
}

/// The official weighting: scores `1 − minmax(max softmax(scale·cos))`, a two-Gaussian mixture
/// over them, and the posterior of the lower-mean component as the ID weight.
pub fn unient_weights(cos: &Tensor, scale: f64) -> Result<UniEntWeights> {
    let max_prob = candle_nn::ops::softmax_last_dim(&(cos * scale)?.contiguous()?)?.max(D::Minus1)?;
    let p = max_prob.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let (lo, hi) = p.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let scores: Vec<f64> = p.iter().map(|v| 1.0 - (v - lo) / (hi - lo)).collect();
    let Some(mixture) = fit_two_gaussians(&scores) else {
        let half = vec![0.5; p.len()];
        return Ok(UniEntWeights { id: half.clone(), ood: half, mixture: None });
    };
    let id_first = mixture.means[0] < mixture.means[1];
    let (id, ood) = mixture.posteriors.iter().map(|q| if id_first { (q[0], q[1]) } else { (q[1], q[0]) }).unzip();
    Ok(UniEntWeights { id, ood, mixture: Some(mixture) })
}

/// UniEnt's loss on unit embeddings `z` and class embeddings `t` with the batch's weights:
/// `beta_tta · mean(w_id · H) − beta_reg · H(mean p) − [beta_ood · mean(w_ood · H)]`.
pub fn unient_loss(z: &Tensor, t: &Tensor, weights: &UniEntWeights, config: &UniEntConfig) -> Result<Tensor> {
    unient_loss_terms(z, t, weights, config)?.total().cloned().ok_or_else(|| Error::Internal("UniEnt loss without terms".into()))
}

/// [`unient_loss`] term by term: weighted ID entropy, marginal entropy, weighted OOD entropy.
pub(crate) fn unient_loss_terms(z: &Tensor, t: &Tensor, weights: &UniEntWeights, config: &UniEntConfig) -> Result<LossSum> {
    let logits = (z.matmul(&t.t()?)? * config.logit_scale)?;
    let h = row_entropies(&logits)?;
    let w = |v: &[f64]| -> Result<Tensor> { Ok(Tensor::new(v, z.device())?.to_dtype(z.dtype())?) };
    let mut loss = LossSum::default();
    loss.add("id_entropy", ((&h * w(&weights.id)?)?.mean_all()? * config.beta_tta)?)?;
    loss.add("marginal_entropy", (marginal_entropy(z, t, config.logit_scale)? * -config.beta_reg)?)?;
    if config.use_ood_loss {
        loss.add("ood_entropy", ((&h * w(&weights.ood)?)?.mean_all()? * -config.beta_ood)?)?;
    }
    Ok(loss)
}

#[derive(Debug)]
struct UniEnt {
    config: UniEntConfig,
    adam: Adam,
}

impl TtaMethod for UniEnt {
    fn min_adapt_batch(&self) -> usize {
        // A mixture of two components needs two images.
        2
    }

    fn adapt(&mut self, cx: &mut AdaptContext<'_>, pixels: &Tensor, steps: &mut Vec<StepLoss>) -> Result<()> {
        let c = self.config.clone();
        let vars: Vec<&Var> = cx.params.vars().iter().collect();
        for _ in 0..c.steps {
            let z = cx.model.image_embeddings(pixels, cx.params, Grad::Enabled)?;
            let cos = z.matmul(&cx.class_embeddings.t()?)?;
            let weights = unient_weights(&cos.detach(), c.logit_scale)?;
            let loss = unient_loss_terms(&z, cx.class_embeddings, &weights, &c)?;
            steps.push(optimise(&mut self.adam, &vars, &loss, cx.stats)?);
        }
        Ok(())
    }

    fn logits(&self, _z: &Tensor, cos: &Tensor) -> Result<Tensor> {
        scaled_logits(cos, self.config.logit_scale)
    }

    fn ood_scores(&self, cos: &Tensor, _logits: &Tensor) -> Result<Tensor> {
        max_prob_scores(cos)
    }

    fn is_ood(&self, cos: &Tensor, _scores: &[f32]) -> Result<Option<Vec<bool>>> {
        if !self.config.open_set {
            return Ok(None);
        }
        let w = unient_weights(cos, self.config.logit_scale)?;
        Ok(Some(w.ood.iter().zip(&w.id).map(|(o, i)| o > i).collect()))
    }

    fn reset(&mut self) -> Result<()> {
        self.adam.reset()
    }

    fn save(&self, state: &mut MethodState) -> Result<()> {
        save_adam(&self.adam, state);
        Ok(())
    }

    fn load(&mut self, state: &MethodState, path: &Path) -> Result<()> {
        load_adam(&mut self.adam, state, path)
    }
}
