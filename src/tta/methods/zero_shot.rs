//! Zero-shot CLIP: no adaptation, the reference every method is compared with.

use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{scaled_logits, BuildContext, MethodSettings, MethodState, Setting, TtaMethod};
use crate::error::Result;
use crate::tta::reset::Reset;

/// Zero-shot settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZeroShotConfig {
    /// Logit scale of the reported probabilities (100).
    pub logit_scale: f64,
}

impl MethodSettings for ZeroShotConfig {
    const SETTINGS: &'static [Setting] = &[Setting { name: "logit_scale", doc: "scale of the cosines in the softmax" }];

    fn official(_open_set: bool) -> Self {
        Self { logit_scale: 100.0 }
    }

    fn reset(&self) -> Reset {
        Reset::Never
    }

    fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn TtaMethod>> {
        Ok(Box::new(ZeroShot { logit_scale: self.logit_scale }))
    }
}

#[derive(Debug)]
struct ZeroShot {
    logit_scale: f64,
}

impl TtaMethod for ZeroShot {
    fn logits(&self, _z: &Tensor, cos: &Tensor) -> Result<Tensor> {
        scaled_logits(cos, self.logit_scale)
    }

    fn reset(&mut self) -> Result<()> {
        Ok(())
    }

    fn save(&self, _state: &mut MethodState) -> Result<()> {
        Ok(())
    }

    fn load(&mut self, _state: &MethodState, _path: &Path) -> Result<()> {
        Ok(())
    }
}
