//! TENT: entropy minimisation on the vision LayerNorms (with the open-set scripts' marginal
//! entropy term when `beta_reg` > 0).

use std::path::Path;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::{load_adam, optimise, save_adam, scaled_logits, AdaptContext, BuildContext, MethodSettings, MethodState, Setting, TtaMethod};
use crate::error::Result;
use crate::model::Grad;
use crate::tta::adam::{Adam, AdamConfig};
use crate::tta::loss::{marginal_entropy, tent_entropy, LossSum, StepLoss};
use crate::tta::reset::Reset;

/// TENT's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TentConfig {
    /// Optimisation steps per batch.
    pub steps: usize,
    /// Adam settings (lr 1e-3 in the closed-set scripts, 1e-4 in the open-set ones).
    pub adam: AdamConfig,
    /// Logit scale of the softmax (100).
    pub logit_scale: f64,
    /// Weight of the marginal-entropy term (0 = pure TENT; 1 in the open-set scripts).
    pub beta_reg: f64,
    /// Reset policy.
    pub reset: Reset,
}

impl Default for TentConfig {
    fn default() -> Self {
        Self::official(false)
    }
}

/// The settings of the methods that train the LayerNorms with Adam, shared by their docs.
pub(super) const ADAM_SETTINGS: [Setting; 4] = [
    Setting { name: "lr", doc: "Adam's learning rate" },
    Setting { name: "beta1", doc: "Adam's first-moment decay" },
    Setting { name: "beta2", doc: "Adam's second-moment decay" },
    Setting { name: "eps", doc: "Adam's epsilon" },
];

/// The steps setting of the methods that optimise per batch.
pub(super) const STEPS: Setting = Setting { name: "steps", doc: "optimisation steps per batch" };

/// The reset setting of the methods that adapt the LayerNorms.
pub(super) const RESET_LAYER_NORMS: Setting =
    Setting { name: "reset", doc: "when the LayerNorms return to the checkpoint: never or per_batch" };

/// Checks Adam's settings (shared with CLIPTTA).
pub(super) fn validate_adam(adam: &AdamConfig) -> std::result::Result<(), String> {
    if adam.lr <= 0.0 {
        return Err(format!("`lr` = {} is not a positive number", adam.lr));
    }
    for (name, b) in [("beta1", adam.beta1), ("beta2", adam.beta2)] {
        if !(0.0..1.0).contains(&b) {
            return Err(format!("`{name}` = {b} is not in [0, 1)"));
        }
    }
    if adam.eps <= 0.0 {
        return Err(format!("`eps` = {} is not a positive number", adam.eps));
    }
    Ok(())
}

impl MethodSettings for TentConfig {
    const SETTINGS: &'static [Setting] = &[
        STEPS,
        ADAM_SETTINGS[0],
        ADAM_SETTINGS[1],
        ADAM_SETTINGS[2],
        ADAM_SETTINGS[3],
        Setting { name: "logit_scale", doc: "scale of the cosines in the softmax" },
        Setting { name: "beta_reg", doc: "weight of the marginal-entropy term (0: pure TENT)" },
        RESET_LAYER_NORMS,
    ];

    fn official(open_set: bool) -> Self {
        let (lr, beta_reg) = if open_set { (1e-4, 1.0) } else { (1e-3, 0.0) };
        Self { steps: 10, adam: AdamConfig::with_lr(lr), logit_scale: 100.0, beta_reg, reset: Reset::Never }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        validate_adam(&self.adam)
    }

    fn reset(&self) -> Reset {
        self.reset
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn TtaMethod>> {
        let vars: Vec<&Var> = cx.params.vars().iter().collect();
        Ok(Box::new(Tent { adam: Adam::new(self.adam, &vars)?, config: self.clone() }))
    }
}

#[derive(Debug)]
struct Tent {
    config: TentConfig,
    adam: Adam,
}

impl TtaMethod for Tent {
    fn min_adapt_batch(&self) -> usize {
        // Maximising the marginal entropy of one prediction only blurs it.
        2
    }

    fn adapt(&mut self, cx: &mut AdaptContext<'_>, pixels: &Tensor, steps: &mut Vec<StepLoss>) -> Result<()> {
        let c = &self.config;
        let vars: Vec<&Var> = cx.params.vars().iter().collect();
        for _ in 0..c.steps {
            let z = cx.model.image_embeddings(pixels, cx.params, Grad::Enabled)?;
            let mut loss = LossSum::default();
            loss.add("entropy", tent_entropy(&z, cx.class_embeddings, c.logit_scale)?)?;
            if c.beta_reg != 0.0 {
                loss.add("marginal_entropy", (marginal_entropy(&z, cx.class_embeddings, c.logit_scale)? * -c.beta_reg)?)?;
            }
            steps.push(optimise(&mut self.adam, &vars, &loss, cx.stats)?);
        }
        Ok(())
    }

    fn logits(&self, _z: &Tensor, cos: &Tensor) -> Result<Tensor> {
        scaled_logits(cos, self.config.logit_scale)
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
