//! Adam, as `torch.optim.Adam` computes it, with its moments exposed for checkpoints.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Adam hyper-parameters (no weight decay: CLIPTTA's scripts set none).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the bias-corrected root of the second moment.
    pub eps: f64,
}

impl AdamConfig {
    /// CLIPTTA's settings: betas (0.9, 0.999), eps 1e-6.
    pub fn with_lr(lr: f64) -> Self {
        Self { lr, beta1: 0.9, beta2: 0.999, eps: 1e-6 }
    }
}

/// Adam state over a fixed list of parameters.
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    step: u64,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Adam {
    /// Zero moments shaped like `params`.
    pub fn new(config: AdamConfig, params: &[&Var]) -> Result<Self> {
        let zeros = |p: &&Var| p.as_tensor().zeros_like();
        let m = params.iter().map(zeros).collect::<candle_core::Result<Vec<_>>>()?;
        let v = params.iter().map(zeros).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { config, step: 0, m, v })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Steps taken since the moments were zero.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// First and second moments, in parameter order.
    pub fn moments(&self) -> (&[Tensor], &[Tensor]) {
        (&self.m, &self.v)
    }

    /// Replaces the state (for resuming).
    pub fn set_state(&mut self, step: u64, m: Vec<Tensor>, v: Vec<Tensor>) -> Result<()> {
        if m.len() != self.m.len() || v.len() != self.v.len() {
            return Err(Error::State(format!("Adam state has {} moments, expected {}", m.len(), self.m.len())));
        }
        for (new, old) in m.iter().chain(&v).zip(self.m.iter().chain(&self.v)) {
            if new.dims() != old.dims() {
                return Err(Error::State(format!("Adam moment shape {:?} differs from {:?}", new.dims(), old.dims())));
            }
        }
        self.step = step;
        self.m = m;
        self.v = v;
        Ok(())
    }

    /// Zeroes the moments and the step count.
    pub fn reset(&mut self) -> Result<()> {
        self.step = 0;
        for t in self.m.iter_mut().chain(self.v.iter_mut()) {
            *t = t.zeros_like()?;
        }
        Ok(())
    }

    /// One update: `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
    pub fn step(&mut self, params: &[&Var], grads: &[Tensor]) -> Result<()> {
        if params.len() != self.m.len() || grads.len() != self.m.len() {
            return Err(Error::Internal("Adam step with a different parameter list".into()));
        }
        self.step += 1;
        let AdamConfig { lr, beta1, beta2, eps } = self.config;
        let bc1 = 1.0 - beta1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - beta2.powi(self.step as i32)).sqrt();
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let m = ((&self.m[i] * beta1)? + (g * (1.0 - beta1))?)?;
            let v = ((&self.v[i] * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + eps)?;
            let update = ((&m / denom)? * (lr / bc1))?;
            p.set(&(p.as_tensor() - update)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two steps on f(p) = sum(c * p^2) against the update written out by hand in f64.
    #[test]
    fn matches_hand_computed_updates() -> Result<()> {
        let dev = Device::Cpu;
        let c = [0.5f64, -2.0, 3.0];
        let p0 = [1.0f64, 0.2, -0.7];
        let var = Var::from_vec(p0.to_vec(), 3, &dev)?;
        let cfg = AdamConfig { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-6 };
        let mut adam = Adam::new(cfg, &[&var])?;
        let (mut m, mut v, mut p) = ([0f64; 3], [0f64; 3], p0);
        for t in 1..=2 {
            let g: Vec<f64> = (0..3).map(|i| 2.0 * c[i] * p[i]).collect();
            adam.step(&[&var], &[Tensor::from_vec(g.clone(), 3, &dev)?])?;
            for i in 0..3 {
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                let mhat = m[i] / (1.0 - 0.9f64.powi(t));
                let denom = v[i].sqrt() / (1.0 - 0.999f64.powi(t)).sqrt() + 1e-6;
                p[i] -= 0.01 * mhat / denom;
            }
        }
        let got = var.as_tensor().to_vec1::<f64>()?;
        for i in 0..3 {
            assert!((got[i] - p[i]).abs() < 1e-12, "{i}: {} vs {}", got[i], p[i]);
        }
        assert_eq!(adam.step_count(), 2);
        Ok(())
    }
}
