//! The test-time adaptation methods, one file each, behind one trait.
//!
//! A method is two types: its settings (`XConfig`, [`MethodSettings`]: the official scripts'
//! defaults, settable by name) and its running state ([`TtaMethod`]: what it adapts, its step on
//! a batch, its logits and OOD score, its state for checkpoints). The [`Adapter`] owns the
//! model, the class embeddings and the vision LayerNorms, and drives the method.
//!
//! Registering a method: write `methods/<name>.rs` and add one line to the `methods!` list at
//! the end of this file; [`Method`], [`MethodConfig`], the option docs and the CLI follow.
//!
//! [`Adapter`]: super::Adapter

mod cliptta;
mod sar;
mod tda;
mod tent;
mod unient;
mod zero_shot;

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;

use candle_core::{DType, Tensor, Var};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use cliptta::ClipTtaConfig;
pub use sar::{SarConfig, SarOptimizer, SarStep};
pub use tda::{CacheUpdate, TdaCaches, TdaConfig, TdaEntry, TdaStep};
pub use tent::TentConfig;
pub use unient::{unient_loss, unient_weights, UniEntConfig, UniEntWeights};
pub use zero_shot::ZeroShotConfig;

use super::adam::Adam;
use super::loss::{LossSum, StepLoss};
use super::ood::log_mcm_score;
use super::reset::Reset;
use super::stats::AdaptStats;
use crate::error::{Error, Result};
use crate::model::{ClipModel, NormParams, NormSnapshot};

/// One hyper-parameter of a method: the name it is set by (`MethodConfig::set`, SQL, the CLI)
/// and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The name, equal to the settings struct's field (or its nested field, for Adam's).
    pub name: &'static str,
    /// One line for the option docs.
    pub doc: &'static str,
}

/// What the adapter lends a method to build its running state.
pub struct BuildContext<'a> {
    /// The model.
    pub model: &'a ClipModel,
    /// The vision LayerNorms the adapter predicts with (a method that adapts them updates these).
    pub params: &'a NormParams,
    /// Number of classes.
    pub num_classes: usize,
}

/// What the adapter lends a method for one batch's adaptation.
pub struct AdaptContext<'a> {
    /// The model.
    pub model: &'a ClipModel,
    /// The vision LayerNorms, shared with the adapter's predictions.
    pub params: &'a NormParams,
    /// Their checkpoint values (for a method that recovers them, as SAR does).
    pub initial: &'a NormSnapshot,
    /// Unit class embeddings `[classes, dim]`.
    pub class_embeddings: &'a Tensor,
    /// The adapter's counters (optimiser steps taken and skipped).
    pub stats: &'a mut AdaptStats,
}

/// A method's settings: its defaults (the official scripts') and how it is built.
pub trait MethodSettings: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static {
    /// Every hyper-parameter settable by name, documented.
    const SETTINGS: &'static [Setting];

    /// The official scripts' settings, closed or open set (a method without an open-set
    /// variant ignores the flag; [`MethodSettings::HAS_OPEN_SET`] says which).
    fn official(open_set: bool) -> Self;

    /// Whether the method has an open-set variant (OOD decisions).
    const HAS_OPEN_SET: bool = false;

    /// Checks values the types allow but the method does not (a zero learning rate, an empty
    /// window); the message names the setting.
    fn validate(&self) -> std::result::Result<(), String> {
        Ok(())
    }

    /// The reset policy.
    fn reset(&self) -> Reset;

    /// Whether OOD decisions are made.
    fn open_set(&self) -> bool {
        false
    }

    /// The running state, over the adapter's model and LayerNorms.
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn TtaMethod>>;
}

/// What a method adds to a saved adapter state: named tensors (safetensors) and JSON values.
#[derive(Debug, Default)]
pub struct MethodState {
    /// Tensors by name, on any device.
    pub tensors: HashMap<String, Tensor>,
    /// Scalars by name.
    pub info: serde_json::Map<String, serde_json::Value>,
}

impl MethodState {
    /// The tensor `name`, or an error naming it and the file.
    pub fn tensor(&self, name: &str, path: &Path) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor { path: path.to_path_buf(), name: name.into() })
    }

    /// The JSON value `name` parsed as `T`, or an error naming it and the file.
    pub fn value<T: DeserializeOwned>(&self, name: &str, path: &Path) -> Result<T> {
        let bad = |why: String| Error::config(path, format!("saved state: `{name}` {why}"));
        let v = self.info.get(name).ok_or_else(|| bad("is missing".into()))?;
        serde_json::from_value(v.clone()).map_err(|e| bad(format!("is unreadable: {e}")))
    }
}

/// A method's running state over a stream of batches.
///
/// The adapter calls, per batch: [`TtaMethod::adapt`] (when the batch holds at least
/// [`TtaMethod::min_adapt_batch`] images), then predicts: unit embeddings `z` under the current
/// LayerNorms, `cos = z Tᵀ`, and [`TtaMethod::observe`] for the final logits.
pub trait TtaMethod: Debug + Send {
    /// Fewest images a batch needs for [`TtaMethod::adapt`]; smaller batches are predicted
    /// without it (counted as unadapted). 0 when the method adapts on anything.
    fn min_adapt_batch(&self) -> usize {
        0
    }

    /// Adapts on a batch of preprocessed images, pushing each optimisation step's loss and its
    /// terms ([`StepLoss::skipped`] for a step skipped as non-finite).
    fn adapt(&mut self, cx: &mut AdaptContext<'_>, pixels: &Tensor, steps: &mut Vec<StepLoss>) -> Result<()> {
        let _ = (cx, pixels, steps);
        Ok(())
    }

    /// Final logits `[n, classes]` at CLIP's scale for unit embeddings `z` and their cosines
    /// with the classes, without learning from them.
    fn logits(&self, z: &Tensor, cos: &Tensor) -> Result<Tensor>;

    /// [`TtaMethod::logits`] for the images of the batch being adapted on, which the method may
    /// learn from as it predicts them (TDA's caches). By default, the same as `logits`.
    fn observe(&mut self, z: &Tensor, cos: &Tensor) -> Result<Tensor> {
        self.logits(z, cos)
    }

    /// OOD scores `[n]`, higher is more in-distribution: log-MCM of the cosines by default.
    fn ood_scores(&self, cos: &Tensor, logits: &Tensor) -> Result<Tensor> {
        let _ = logits;
        Ok(log_mcm_score(cos)?)
    }

    /// The current OOD threshold (open set): `score <= threshold` is OOD.
    fn threshold(&self) -> Result<Option<f32>> {
        Ok(None)
    }

    /// OOD decisions made otherwise than by a threshold on the scores (UniEnt's mixture);
    /// `None` to use [`TtaMethod::threshold`].
    fn is_ood(&self, cos: &Tensor, scores: &[f32]) -> Result<Option<Vec<bool>>> {
        let _ = (cos, scores);
        Ok(None)
    }

    /// Images or embeddings kept from the stream (CLIPTTA's memory, TDA's caches).
    fn kept(&self) -> usize {
        0
    }

    /// Forgets what was learnt (optimiser moments, memories, caches); the adapter restores the
    /// LayerNorms.
    fn reset(&mut self) -> Result<()>;

    /// Adds the method's state to a saved adapter state.
    fn save(&self, state: &mut MethodState) -> Result<()>;

    /// Restores what [`TtaMethod::save`] wrote (`path` names the file in errors).
    fn load(&mut self, state: &MethodState, path: &Path) -> Result<()>;
}

/// The official `max_prob` OOD score at OOD logit scale 1: `max softmax(cos)`, the exponential of
/// log-MCM (the same ranking), for the methods whose official runs report it (UniEnt, SAR).
fn max_prob_scores(cos: &Tensor) -> Result<Tensor> {
    Ok(log_mcm_score(cos)?.exp()?)
}

/// `scale * cos`, the logits of every method that only adapts the encoder.
fn scaled_logits(cos: &Tensor, scale: f64) -> Result<Tensor> {
    Ok((cos * scale)?.contiguous()?)
}

/// One guarded Adam step on `loss` over `vars`; returns the loss and its terms, or
/// [`StepLoss::skipped`] when the loss or a gradient is not finite (then the weights are kept
/// and the step counted as skipped).
fn optimise(adam: &mut Adam, vars: &[&Var], loss: &LossSum, stats: &mut AdaptStats) -> Result<StepLoss> {
    let Some(total) = loss.total() else {
        return Err(Error::Internal("a step with an empty loss".into()));
    };
    let value = total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !value.is_finite() {
        stats.skipped_steps += 1;
        return Ok(StepLoss::skipped());
    }
    let terms = loss.values()?;
    let loss = total;
    let grads = loss.backward()?;
    let mut gs = Vec::with_capacity(vars.len());
    for var in vars {
        let g = match grads.get(var.as_tensor()) {
            Some(g) => g.clone(),
            None => var.as_tensor().zeros_like()?,
        };
        let norm = g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !norm.is_finite() {
            stats.skipped_steps += 1;
            return Ok(StepLoss::skipped());
        }
        gs.push(g);
    }
    adam.step(vars, &gs)?;
    stats.steps += 1;
    Ok(StepLoss { loss: value as f32, terms })
}

/// Adds Adam's step count and moments to a saved state (`adam.m.{i}`, `adam.v.{i}`).
fn save_adam(adam: &Adam, state: &mut MethodState) {
    let (m, v) = adam.moments();
    for (i, (m, v)) in m.iter().zip(v).enumerate() {
        state.tensors.insert(format!("adam.m.{i}"), m.clone());
        state.tensors.insert(format!("adam.v.{i}"), v.clone());
    }
    state.info.insert("adam_step".into(), adam.step_count().into());
}

/// Restores what [`save_adam`] wrote.
fn load_adam(adam: &mut Adam, state: &MethodState, path: &Path) -> Result<()> {
    let count = adam.moments().0.len();
    let m = (0..count).map(|i| state.tensor(&format!("adam.m.{i}"), path).cloned()).collect::<Result<Vec<_>>>()?;
    let v = (0..count).map(|i| state.tensor(&format!("adam.v.{i}"), path).cloned()).collect::<Result<Vec<_>>>()?;
    adam.set_state(state.value("adam_step", path)?, m, v)
}

/// Sets one field of a settings struct by name, through its JSON form: the text is read as the
/// field's current type (integer, number, boolean or name), so every method's settings share
/// one parser. Adam's settings sit one level down (`adam.lr` is set as `lr`).
fn set_by_name<C: MethodSettings>(config: &mut C, method: Method, key: &str, value: &str) -> Result<()> {
    use serde_json::Value;
    let bad = |what: &str| Error::InvalidInput(format!("`{key}` = `{value}` is not {what}"));
    if !C::SETTINGS.iter().any(|s| s.name == key) {
        let others: Vec<&str> = Method::ALL.iter().filter(|m| m.settings().iter().any(|s| s.name == key)).map(|m| m.as_str()).collect();
        let hint = if others.is_empty() { String::new() } else { format!(" (it is a setting of {})", others.join(", ")) };
        return Err(Error::InvalidInput(format!("method `{method}` has no setting `{key}`{hint}")));
    }
    let mut json = serde_json::to_value(&*config).map_err(|e| Error::Internal(format!("settings of {method}: {e}")))?;
    let Value::Object(fields) = &mut json else {
        return Err(Error::Internal(format!("settings of {method} are not a struct")));
    };
    let slot = field_mut(fields, key).ok_or_else(|| Error::Internal(format!("setting `{key}` of {method} is not a field")))?;
    let text = value.trim();
    *slot = match &*slot {
        Value::Bool(_) => Value::Bool(match text {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad("a boolean")),
        }),
        Value::Number(n) if n.is_u64() => Value::from(text.parse::<u64>().map_err(|_| bad("a non-negative integer"))?),
        Value::Number(_) => {
            let x = text.parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| bad("a number"))?;
            Value::from(x)
        }
        Value::String(_) => Value::String(text.to_string()),
        other => return Err(Error::Internal(format!("setting `{key}` of {method} has no text form ({other})"))),
    };
    let updated: C = serde_json::from_value(json).map_err(|e| Error::InvalidInput(format!("`{key}` = `{value}`: {e}")))?;
    updated.validate().map_err(Error::InvalidInput)?;
    *config = updated;
    Ok(())
}

/// A setting's slot in a settings struct's JSON form: a field, or a field one level down (Adam's).
fn field_mut<'a>(fields: &'a mut serde_json::Map<String, serde_json::Value>, key: &str) -> Option<&'a mut serde_json::Value> {
    if fields.contains_key(key) {
        return fields.get_mut(key);
    }
    fields.values_mut().filter_map(|v| v.as_object_mut()).find_map(|inner| inner.get_mut(key))
}

/// The value of one setting as text (for docs and EXPLAIN).
fn show_by_name<C: MethodSettings>(config: &C, key: &str) -> Option<String> {
    let mut json = serde_json::to_value(config).ok()?;
    let v = field_mut(json.as_object_mut()?, key)?;
    Some(match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

macro_rules! methods {
    ($( $(#[doc = $doc:literal])* $variant:ident($config:ty) = $name:literal, $title:literal; )*) => {
        /// An adaptation method, by name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Method {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Method {
            /// Every method, in the order the docs list them.
            pub const ALL: &'static [Method] = &[$(Method::$variant),*];

            /// The method's name (`method =>` in SQL, `--method` in the CLI).
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// The name as written in prose and messages (`CLIPTTA`, `TENT`).
            pub fn title(self) -> &'static str {
                match self { $(Self::$variant => $title,)* }
            }

            /// The method's hyper-parameters.
            pub fn settings(self) -> &'static [Setting] {
                match self { $(Self::$variant => <$config as MethodSettings>::SETTINGS,)* }
            }

            /// Whether the method has an open-set variant.
            pub fn has_open_set(self) -> bool {
                match self { $(Self::$variant => <$config as MethodSettings>::HAS_OPEN_SET,)* }
            }
        }

        /// A method with all its settings.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "method", rename_all = "snake_case")]
        pub enum MethodConfig {
            $( $(#[doc = $doc])* $variant($config), )*
        }

        impl MethodConfig {
            /// The method's defaults, closed or open set (see [`MethodSettings::official`]).
            pub fn new(method: Method, open_set: bool) -> Self {
                match method { $(Method::$variant => Self::$variant(<$config as MethodSettings>::official(open_set)),)* }
            }

            /// Which method this is.
            pub fn method(&self) -> Method {
                match self { $(Self::$variant(_) => Method::$variant,)* }
            }

            /// Overrides one hyper-parameter by name ([`Method::settings`] lists them), with the
            /// method's checks; a name the method does not have is an error naming both.
            pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
                let method = self.method();
                match self { $(Self::$variant(c) => set_by_name(c, method, key, value),)* }
            }

            /// One hyper-parameter's value as text, `None` for a name the method does not have.
            pub fn get(&self, key: &str) -> Option<String> {
                if !self.method().settings().iter().any(|s| s.name == key) {
                    return None;
                }
                match self { $(Self::$variant(c) => show_by_name(c, key),)* }
            }

            /// The reset policy.
            pub fn reset(&self) -> Reset {
                match self { $(Self::$variant(c) => c.reset(),)* }
            }

            /// Whether OOD decisions are made.
            pub fn open_set(&self) -> bool {
                match self { $(Self::$variant(c) => c.open_set(),)* }
            }

            pub(crate) fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn TtaMethod>> {
                match self { $(Self::$variant(c) => c.build(cx),)* }
            }
        }
    };
}

methods! {
    /// No adaptation: CLIP's zero-shot predictions.
    ZeroShot(ZeroShotConfig) = "zero_shot", "zero-shot";
    /// TENT: entropy minimisation on the vision LayerNorms.
    Tent(TentConfig) = "tent", "TENT";
    /// CLIPTTA: soft contrastive adaptation of the vision LayerNorms (closed or open set).
    Cliptta(ClipTtaConfig) = "cliptta", "CLIPTTA";
    /// TDA: training-free dynamic positive and negative caches of image embeddings.
    Tda(TdaConfig) = "tda", "TDA";
    /// UniEnt: entropy minimisation weighted by a two-Gaussian split of the batch into ID and OOD.
    Unient(UniEntConfig) = "unient", "UniEnt";
    /// SAR: sharpness-aware entropy minimisation on the reliable images, with model recovery.
    Sar(SarConfig) = "sar", "SAR";
}

impl Method {
    /// Whether the method changes anything as it runs (every method but zero-shot).
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
        let s = s.trim();
        let alias = match s {
            "zeroshot" | "clip" => "zero_shot",
            other => other,
        };
        Method::ALL.iter().copied().find(|m| m.as_str() == alias).ok_or_else(|| {
            Error::InvalidInput(format!("`{s}` is not one of {}", Method::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")))
        })
    }
}

impl MethodConfig {
    /// The method's defaults by name (see [`Method::ALL`]). In the open set, TENT gets the
    /// open-set scripts' settings (lr 1e-4, beta_reg 1).
    pub fn from_name(name: &str, open_set: bool) -> Result<Self> {
        let method: Method = name.parse().map_err(|e: Error| Error::InvalidInput(format!("unknown method: {e}")))?;
        Ok(Self::new(method, open_set))
    }

    /// The method's name.
    pub fn name(&self) -> &'static str {
        self.method().as_str()
    }

    /// Sets the optimisation steps per batch (methods with a `steps` setting).
    pub fn set_steps(&mut self, steps: usize) -> Result<()> {
        self.set("steps", &steps.to_string())
    }

    /// Sets Adam's learning rate (methods with an `lr` setting); it must be finite and positive.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::InvalidInput(format!("`lr` = {lr} is not a positive number")));
        }
        self.set("lr", &format!("{lr:e}"))
    }

    /// Sets the reset policy.
    pub fn set_reset(&mut self, reset: Reset) -> Result<()> {
        self.set("reset", reset.as_str())
    }

    /// Sets the seed of the method's sampler (methods with a `seed` setting).
    pub fn set_seed(&mut self, seed: u64) -> Result<()> {
        self.set("seed", &seed.to_string())
    }

    /// Whether the method has a setting named `key`.
    pub fn has_setting(&self, key: &str) -> bool {
        self.method().settings().iter().any(|s| s.name == key)
    }
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
        let MethodConfig::Tda(d) = MethodConfig::from_name("tda", false).unwrap() else { panic!() };
        assert_eq!((d.pos_alpha, d.pos_beta, d.neg_alpha, d.neg_beta), (2.0, 5.0, 0.117, 1.0));
        assert_eq!((d.pos_capacity, d.neg_capacity, d.entropy_low, d.entropy_high, d.mask_low, d.mask_high), (3, 2, 0.2, 0.5, 0.03, 1.0));
    }

    #[test]
    fn overrides_and_their_errors() {
        let mut m = MethodConfig::from_name("cliptta", false).unwrap();
        m.set("lr", "5e-4").unwrap();
        m.set("reset", "per_batch").unwrap();
        m.set("num_shots", "16").unwrap();
        m.set("use_memory", "false").unwrap();
        let MethodConfig::Cliptta(c) = &m else { panic!() };
        assert_eq!((c.adam.lr, c.reset, c.num_shots, c.use_memory), (5e-4, Reset::PerBatch, 16, false));
        assert_eq!(m.get("lr").as_deref(), Some("0.0005"));
        for (k, v, needle) in [
            ("lr", "fast", "a number"),
            ("lr", "0", "positive"),
            ("gamma", "0", "positive"),
            ("num_shots", "1.5", "non-negative integer"),
            ("use_memory", "maybe", "a boolean"),
            ("warp", "1", "method `cliptta` has no setting `warp`"),
            ("pos_alpha", "1", "(it is a setting of tda)"),
            ("reset", "sometimes", "unknown variant `sometimes`"),
        ] {
            let err = m.set(k, v).unwrap_err().to_string();
            assert!(err.contains(needle), "{k}={v}: {err}");
        }
        assert!(MethodConfig::from_name("eata", false).is_err());
        let mut z = MethodConfig::from_name("zero_shot", false).unwrap();
        assert!(z.set("lr", "1").unwrap_err().to_string().contains("(it is a setting of tent, cliptta, unient, sar)"));
        let mut d = MethodConfig::from_name("tda", false).unwrap();
        assert!(d.set("entropy_low", "0.6").unwrap_err().to_string().contains("entropy_low"));
    }

    #[test]
    fn every_field_is_a_documented_setting() {
        // Settings are the struct's fields (Adam's one level down), and nothing else: one
        // definition per fact between the docs and the types. `open_set` is the scan option.
        for &method in Method::ALL {
            let json = serde_json::to_value(MethodConfig::new(method, method.has_open_set())).unwrap();
            let mut fields: Vec<String> = Vec::new();
            for (k, v) in json.as_object().unwrap() {
                match v {
                    serde_json::Value::Object(inner) => fields.extend(inner.keys().cloned()),
                    _ if k == "method" || k == "open_set" => {}
                    _ => fields.push(k.clone()),
                }
            }
            let mut documented: Vec<String> = method.settings().iter().map(|s| s.name.to_string()).collect();
            fields.sort();
            documented.sort();
            assert_eq!(fields, documented, "{method}");
            assert_eq!(serde_json::to_value(method).unwrap(), method.as_str(), "serde name of {method}");
            for s in method.settings() {
                assert!(!s.doc.is_empty() && MethodConfig::new(method, false).get(s.name).is_some(), "{method}.{}", s.name);
            }
        }
    }

    #[test]
    fn round_trips_through_json() {
        for &method in Method::ALL {
            let m = MethodConfig::new(method, method.has_open_set());
            let back: MethodConfig = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            assert_eq!(back, m);
        }
    }
}
