//! The adaptation methods and their hyper-parameters, with the defaults of the official scripts.

use serde::{Deserialize, Serialize};

use super::adam::AdamConfig;
use crate::error::{Error, Result};

/// When adapted state returns to the checkpoint's values. One policy for the adapter and the
/// SQL layer: an adapter sees `never` and `per_partition` alike (it adapts across its whole
/// stream); they differ in whether a scan's partitions share one adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Reset {
    /// Continual: adapt across the whole stream (the official protocol within a stream); in
    /// SQL, one adapter for the whole scan, shared by its partitions.
    #[default]
    Never,
    /// Episodic: reset before every batch.
    PerBatch,
    /// One fresh adapter per partition of a scan, continual within it.
    PerPartition,
}

impl Reset {
    /// Every policy.
    pub const ALL: [Reset; 3] = [Reset::Never, Reset::PerBatch, Reset::PerPartition];

    /// The option's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::PerBatch => "per_batch",
            Self::PerPartition => "per_partition",
        }
    }
}

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Reset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "never" | "continual" => Ok(Self::Never),
            "per_batch" | "episodic" => Ok(Self::PerBatch),
            "per_partition" => Ok(Self::PerPartition),
            other => Err(Error::InvalidInput(format!("unknown reset policy `{other}`; expected never, per_batch or per_partition"))),
        }
    }
}

/// An adaptation method, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// No adaptation: CLIP's zero-shot predictions.
    ZeroShot,
    /// TENT: entropy minimisation on the vision LayerNorms.
    Tent,
    /// CLIPTTA: soft contrastive adaptation (closed or open set).
    Cliptta,
}

impl Method {
    /// Every method, in the order the docs list them.
    pub const ALL: [Method; 3] = [Method::ZeroShot, Method::Tent, Method::Cliptta];

    /// The method's name (`method =>` in SQL, `--method` in the CLI).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ZeroShot => "zero_shot",
            Self::Tent => "tent",
            Self::Cliptta => "cliptta",
        }
    }

    /// Whether the method changes the model (every method but zero-shot).
    pub fn adapts(self) -> bool {
        self != Self::ZeroShot
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "zero_shot" | "zeroshot" | "clip" => Ok(Self::ZeroShot),
            "tent" => Ok(Self::Tent),
            "cliptta" => Ok(Self::Cliptta),
            other => Err(Error::InvalidInput(format!(
                "`{other}` is not one of {}",
                Self::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

/// TENT: entropy minimisation on the vision LayerNorms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TentConfig {
    /// Optimisation steps per batch.
    pub steps: usize,
    /// Adam settings (lr 1e-3 in the closed-set scripts).
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
        Self { steps: 10, adam: AdamConfig::with_lr(1e-3), logit_scale: 100.0, beta_reg: 0.0, reset: Reset::Never }
    }
}

/// CLIPTTA, closed or open set.
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

impl ClipTtaConfig {
    /// The CIFAR-10 script settings, closed or open set.
    pub fn official(open_set: bool) -> Self {
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
}

/// A method with all its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum MethodConfig {
    /// No adaptation: CLIP's zero-shot predictions.
    ZeroShot {
        /// Logit scale for the reported probabilities (100).
        logit_scale: f64,
    },
    /// TENT.
    Tent(TentConfig),
    /// CLIPTTA.
    Cliptta(ClipTtaConfig),
}

impl MethodConfig {
    /// The method's defaults by name: `zero_shot`, `tent` or `cliptta`. In the open set TENT
    /// gets the open-set script settings (lr 1e-4, beta_reg 1).
    pub fn from_name(name: &str, open_set: bool) -> Result<Self> {
        let method: Method = name.parse().map_err(|_| Error::InvalidInput(format!("unknown method `{name}`; expected zero_shot, tent or cliptta")))?;
        Ok(Self::new(method, open_set))
    }

    /// The method's defaults (see [`MethodConfig::from_name`]).
    pub fn new(method: Method, open_set: bool) -> Self {
        match method {
            Method::ZeroShot => Self::ZeroShot { logit_scale: 100.0 },
            Method::Tent => {
                let mut cfg = TentConfig::default();
                if open_set {
                    cfg.adam.lr = 1e-4;
                    cfg.beta_reg = 1.0;
                }
                Self::Tent(cfg)
            }
            Method::Cliptta => Self::Cliptta(ClipTtaConfig::official(open_set)),
        }
    }

    /// Which method this is.
    pub fn method(&self) -> Method {
        match self {
            Self::ZeroShot { .. } => Method::ZeroShot,
            Self::Tent(_) => Method::Tent,
            Self::Cliptta(_) => Method::Cliptta,
        }
    }

    /// The method's name.
    pub fn name(&self) -> &'static str {
        self.method().as_str()
    }

    fn no_setting(&self, key: &str) -> Error {
        Error::InvalidInput(format!("method `{}` has no setting `{key}`", self.name()))
    }

    /// Sets the optimisation steps per batch (TENT, CLIPTTA).
    pub fn set_steps(&mut self, steps: usize) -> Result<()> {
        match self {
            Self::Tent(c) => c.steps = steps,
            Self::Cliptta(c) => c.steps = steps,
            Self::ZeroShot { .. } => return Err(self.no_setting("steps")),
        }
        Ok(())
    }

    /// Sets Adam's learning rate (TENT, CLIPTTA); it must be finite and positive.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::InvalidInput(format!("`lr` = {lr} is not a positive number")));
        }
        match self {
            Self::Tent(c) => c.adam.lr = lr,
            Self::Cliptta(c) => c.adam.lr = lr,
            Self::ZeroShot { .. } => return Err(self.no_setting("lr")),
        }
        Ok(())
    }

    /// Sets the reset policy (TENT, CLIPTTA).
    pub fn set_reset(&mut self, reset: Reset) -> Result<()> {
        match self {
            Self::Tent(c) => c.reset = reset,
            Self::Cliptta(c) => c.reset = reset,
            Self::ZeroShot { .. } => return Err(self.no_setting("reset")),
        }
        Ok(())
    }

    /// Sets the memory sampler's seed (CLIPTTA).
    pub fn set_seed(&mut self, seed: u64) -> Result<()> {
        match self {
            Self::Cliptta(c) => c.seed = seed,
            _ => return Err(self.no_setting("seed")),
        }
        Ok(())
    }

    /// Whether OOD decisions are made (CLIPTTA open set).
    pub fn open_set(&self) -> bool {
        matches!(self, Self::Cliptta(c) if c.open_set)
    }

    /// The reset policy.
    pub fn reset(&self) -> Reset {
        match self {
            Self::ZeroShot { .. } => Reset::Never,
            Self::Tent(c) => c.reset,
            Self::Cliptta(c) => c.reset,
        }
    }

    /// The logit scale of reported probabilities and losses.
    pub fn logit_scale(&self) -> f64 {
        match self {
            Self::ZeroShot { logit_scale } => *logit_scale,
            Self::Tent(c) => c.logit_scale,
            Self::Cliptta(c) => c.logit_scale,
        }
    }

    /// Overrides one hyper-parameter by name (`steps`, `lr`, `beta1`, `beta2`, `eps`,
    /// `logit_scale`, `beta_reg`, `beta_tta`, `beta_ood`, `gamma`, `use_memory`, `num_shots`,
    /// `sample_size`, `seed`, `reset`). Names the method does not have are errors.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let bad = |v: &str, what: &str| Error::InvalidInput(format!("`{key}` = `{v}` is not {what}"));
        let float = |v: &str| v.trim().parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| bad(v, "a number"));
        let count = |v: &str| v.trim().parse::<usize>().map_err(|_| bad(v, "a non-negative integer"));
        let flag = |v: &str| match v.trim() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(bad(v, "a boolean")),
        };
        let method = self.name();
        let unknown = || Error::InvalidInput(format!("method `{method}` has no setting `{key}`"));
        match self {
            Self::ZeroShot { logit_scale } => match key {
                "logit_scale" => *logit_scale = float(value)?,
                _ => return Err(unknown()),
            },
            Self::Tent(c) if is_common(key) => {
                set_common(key, value, &mut c.steps, &mut c.adam, [&mut c.logit_scale, &mut c.beta_reg], &mut c.reset)?;
            }
            Self::Tent(_) => return Err(unknown()),
            Self::Cliptta(c) => match key {
                _ if is_common(key) => {
                    set_common(key, value, &mut c.steps, &mut c.adam, [&mut c.logit_scale, &mut c.beta_reg], &mut c.reset)?;
                }
                "beta_tta" => c.beta_tta = float(value)?,
                "beta_ood" => c.beta_ood = float(value)?,
                "gamma" => {
                    let g = float(value)?;
                    if g <= 0.0 {
                        return Err(bad(value, "a positive number"));
                    }
                    c.gamma = g
                }
                "use_memory" => c.use_memory = flag(value)?,
                "num_shots" => c.num_shots = count(value)?,
                "sample_size" => c.sample_size = count(value)?,
                "seed" => c.seed = value.trim().parse().map_err(|_| bad(value, "an unsigned integer"))?,
                _ => return Err(unknown()),
            },
        }
        Ok(())
    }
}

const COMMON_KEYS: [&str; 8] = ["steps", "lr", "beta1", "beta2", "eps", "logit_scale", "beta_reg", "reset"];

fn is_common(key: &str) -> bool {
    COMMON_KEYS.contains(&key)
}

/// Sets one of the settings TENT and CLIPTTA share ([`COMMON_KEYS`]); `Ok(false)` for any other
/// key. `scale_and_reg` is `[logit_scale, beta_reg]`.
fn set_common(
    key: &str,
    value: &str,
    steps: &mut usize,
    adam: &mut AdamConfig,
    scale_and_reg: [&mut f64; 2],
    reset: &mut Reset,
) -> Result<bool> {
    let float = |v: &str| {
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| Error::InvalidInput(format!("`{key}` = `{v}` is not a number")))
    };
    let [logit_scale, beta_reg] = scale_and_reg;
    match key {
        "steps" => {
            *steps = value
                .trim()
                .parse()
                .map_err(|_| Error::InvalidInput(format!("`{key}` = `{value}` is not a non-negative integer")))?
        }
        "lr" => adam.lr = float(value)?,
        "beta1" => adam.beta1 = float(value)?,
        "beta2" => adam.beta2 = float(value)?,
        "eps" => adam.eps = float(value)?,
        "logit_scale" => *logit_scale = float(value)?,
        "beta_reg" => *beta_reg = float(value)?,
        "reset" => *reset = value.parse()?,
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_scripts() {
        let MethodConfig::Cliptta(c) = MethodConfig::from_name("cliptta", true).unwrap() else { panic!() };
        assert_eq!((c.steps, c.adam.lr, c.adam.eps, c.num_shots, c.sample_size, c.gamma), (10, 1e-4, 1e-6, 16, 128, 0.005));
        let MethodConfig::Tent(t) = MethodConfig::from_name("tent", false).unwrap() else { panic!() };
        assert_eq!((t.adam.lr, t.beta_reg), (1e-3, 0.0));
    }

    #[test]
    fn overrides_and_their_errors() {
        let mut m = MethodConfig::from_name("cliptta", false).unwrap();
        m.set("lr", "5e-4").unwrap();
        m.set("reset", "per_batch").unwrap();
        let MethodConfig::Cliptta(c) = &m else { panic!() };
        assert_eq!((c.adam.lr, c.reset), (5e-4, Reset::PerBatch));
        for (k, v, needle) in [("lr", "fast", "a number"), ("gamma", "0", "positive"), ("warp", "1", "no setting `warp`"), ("reset", "sometimes", "reset policy")] {
            let err = m.set(k, v).unwrap_err().to_string();
            assert!(err.contains(needle), "{k}={v}: {err}");
        }
        assert!(MethodConfig::from_name("sar", false).is_err());
        let mut z = MethodConfig::from_name("zero_shot", false).unwrap();
        assert!(z.set("lr", "1").is_err());
    }

    #[test]
    fn round_trips_through_json() {
        let m = MethodConfig::from_name("cliptta", true).unwrap();
        let back: MethodConfig = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
