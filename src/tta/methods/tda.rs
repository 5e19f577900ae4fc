//! TDA (Karmanov et al., CVPR 2024), as the official CLIPTTA repository runs it: training-free
//! positive and negative caches of image embeddings, keyed by CLIP's predicted class, whose
//! affinities to each new image shift its logits. Nothing is trained; the caches are the state.
//!
//! Behaviours copied from the official code (`ttavlm/methods/tda.py`, checked against
//! `tests/fixtures/tda-reference.json`):
//! - images are taken one at a time in stream order (the scripts run TDA at batch size 1), and
//!   both caches are updated *before* the image's own logits are computed;
//! - the entropy is in nats but divided by log₂ K for the negative-cache window, and is
//!   computed on the logits plus 1e-6 (the probabilities kept in the cache are not);
//! - a full class list admits a newcomer only if its entropy is strictly below the worst
//!   entry's, which it replaces; the list is then stably re-sorted by entropy;
//! - the negative mask keeps probabilities strictly inside `(mask_low, mask_high)`;
//! - the score is the maximum softmax of the final logits (no extra scale).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{BuildContext, MethodSettings, MethodState, Setting, TtaMethod};
use crate::error::{Error, Result};
use crate::tta::reset::Reset;

/// TDA's settings (the official defaults; no script overrides them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TdaConfig {
    /// Logit scale of CLIP's logits (100).
    pub logit_scale: f64,
    /// Weight of the positive cache's logits (2.0).
    pub pos_alpha: f64,
    /// Sharpness of the positive affinities (5.0).
    pub pos_beta: f64,
    /// Weight of the negative cache's logits (0.117).
    pub neg_alpha: f64,
    /// Sharpness of the negative affinities (1.0).
    pub neg_beta: f64,
    /// Positive entries per class (3).
    pub pos_capacity: usize,
    /// Negative entries per class (2).
    pub neg_capacity: usize,
    /// Lower end of the normalised-entropy window for the negative cache (0.2, exclusive).
    pub entropy_low: f64,
    /// Upper end of the window (0.5, exclusive).
    pub entropy_high: f64,
    /// Probabilities above this (exclusive) enter the negative mask (0.03).
    pub mask_low: f64,
    /// Probabilities below this (exclusive) enter the negative mask (1.0).
    pub mask_high: f64,
    /// Reset policy: `never` keeps the caches across the whole stream, as the official runs do.
    pub reset: Reset,
}

impl MethodSettings for TdaConfig {
    const SETTINGS: &'static [Setting] = &[
        Setting { name: "logit_scale", doc: "scale of the cosines in CLIP's logits" },
        Setting { name: "pos_alpha", doc: "weight of the positive cache's logits" },
        Setting { name: "pos_beta", doc: "sharpness of the positive cache's affinities" },
        Setting { name: "neg_alpha", doc: "weight of the negative cache's logits" },
        Setting { name: "neg_beta", doc: "sharpness of the negative cache's affinities" },
        Setting { name: "pos_capacity", doc: "positive cache entries per class" },
        Setting { name: "neg_capacity", doc: "negative cache entries per class" },
        Setting { name: "entropy_low", doc: "normalised entropy above which an image enters the negative cache (exclusive)" },
        Setting { name: "entropy_high", doc: "normalised entropy below which an image enters the negative cache (exclusive)" },
        Setting { name: "mask_low", doc: "probabilities above this enter the negative mask (exclusive)" },
        Setting { name: "mask_high", doc: "probabilities below this enter the negative mask (exclusive)" },
        Setting { name: "reset", doc: "when the caches are emptied: never (the official runs) or per_batch" },
    ];

    fn official(_open_set: bool) -> Self {
        Self {
            logit_scale: 100.0,
            pos_alpha: 2.0,
            pos_beta: 5.0,
            neg_alpha: 0.117,
            neg_beta: 1.0,
            pos_capacity: 3,
            neg_capacity: 2,
            entropy_low: 0.2,
            entropy_high: 0.5,
            mask_low: 0.03,
            mask_high: 1.0,
            reset: Reset::Never,
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        for (name, cap) in [("pos_capacity", self.pos_capacity), ("neg_capacity", self.neg_capacity)] {
            if cap == 0 {
                return Err(format!("`{name}` = 0: a cache needs room for one entry per class"));
            }
        }
        if !(self.entropy_low < self.entropy_high) {
            return Err(format!("`entropy_low` = {} is not below `entropy_high` = {}", self.entropy_low, self.entropy_high));
        }
        if !(self.mask_low < self.mask_high) {
            return Err(format!("`mask_low` = {} is not below `mask_high` = {}", self.mask_low, self.mask_high));
        }
        Ok(())
    }

    fn reset(&self) -> Reset {
        self.reset
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn TtaMethod>> {
        Ok(Box::new(Tda { caches: TdaCaches::new(self.clone(), cx.num_classes) }))
    }
}

/// One cached image: its unit embedding, its entropy (nats) and, in the negative cache, its
/// class probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct TdaEntry {
    /// Unit image embedding.
    pub feature: Vec<f64>,
    /// Entropy of CLIP's softmax, in nats.
    pub loss: f64,
    /// CLIP's class probabilities (negative cache only; empty in the positive cache).
    pub probs: Vec<f64>,
}

/// What an update did to one class's cache list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUpdate {
    /// The class had no list: the image starts one.
    Created,
    /// The list had room.
    Appended,
    /// The list was full and the image replaced its worst entry.
    Replaced,
    /// The list was full and the image was no better than its worst entry.
    Rejected,
}

/// One image through the caches.
#[derive(Debug, Clone, PartialEq)]
pub struct TdaStep {
    /// CLIP's class (the caches' key).
    pub class: usize,
    /// Entropy in nats.
    pub loss: f64,
    /// What the positive cache did.
    pub positive: CacheUpdate,
    /// What the negative cache did; `None` outside the entropy window.
    pub negative: Option<CacheUpdate>,
    /// The final logits.
    pub logits: Vec<f64>,
}

/// TDA's positive and negative caches, per class, each list sorted by entropy.
#[derive(Debug, Clone)]
pub struct TdaCaches {
    config: TdaConfig,
    positive: Vec<Vec<TdaEntry>>,
    negative: Vec<Vec<TdaEntry>>,
}

impl TdaCaches {
    /// Empty caches over `num_classes` classes.
    pub fn new(config: TdaConfig, num_classes: usize) -> Self {
        Self { config, positive: vec![Vec::new(); num_classes], negative: vec![Vec::new(); num_classes] }
    }

    /// The positive list of `class`, best first.
    pub fn positive(&self, class: usize) -> &[TdaEntry] {
        &self.positive[class]
    }

    /// The negative list of `class`, best first.
    pub fn negative(&self, class: usize) -> &[TdaEntry] {
        &self.negative[class]
    }

    /// Entries held in both caches.
    pub fn len(&self) -> usize {
        self.positive.iter().chain(&self.negative).map(Vec::len).sum()
    }

    /// Whether both caches are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties both caches.
    pub fn clear(&mut self) {
        self.positive.iter_mut().chain(self.negative.iter_mut()).for_each(Vec::clear);
    }

    /// Takes one image (`feature` unit, `cos` its cosines with the classes): updates the caches
    /// with it, then returns its final logits.
    pub fn step(&mut self, feature: &[f64], cos: &[f64]) -> TdaStep {
        let c = &self.config;
        let clip: Vec<f64> = cos.iter().map(|x| x * c.logit_scale).collect();
        let shifted: Vec<f64> = clip.iter().map(|x| x + 1e-6).collect();
        let log_p = log_softmax(&shifted);
        let loss = -log_p.iter().map(|l| l.exp() * l).sum::<f64>();
        let probs: Vec<f64> = log_softmax(&clip).iter().map(|l| l.exp()).collect();
        let class = argmax(&clip);
        let normalised = loss / (clip.len() as f64).log2();
        let positive = update(&mut self.positive[class], TdaEntry { feature: feature.to_vec(), loss, probs: Vec::new() }, c.pos_capacity);
        let negative = (c.entropy_low < normalised && normalised < c.entropy_high)
            .then(|| update(&mut self.negative[class], TdaEntry { feature: feature.to_vec(), loss, probs: probs.clone() }, c.neg_capacity));
        let logits = self.logits_of(feature, &clip);
        TdaStep { class, loss, positive, negative, logits }
    }

    /// The final logits of an image under the current caches, without updating them.
    pub fn logits(&self, feature: &[f64], cos: &[f64]) -> Vec<f64> {
        let clip: Vec<f64> = cos.iter().map(|x| x * self.config.logit_scale).collect();
        self.logits_of(feature, &clip)
    }

    fn logits_of(&self, feature: &[f64], clip: &[f64]) -> Vec<f64> {
        let c = &self.config;
        let affinity = |e: &TdaEntry, beta: f64| (-(beta - beta * dot(feature, &e.feature))).exp();
        let mut out = clip.to_vec();
        let mut pos = vec![0.0; clip.len()];
        for (class, list) in self.positive.iter().enumerate() {
            for e in list {
                pos[class] += affinity(e, c.pos_beta);
            }
        }
        let mut neg = vec![0.0; clip.len()];
        let mut any_negative = false;
        for e in self.negative.iter().flatten() {
            any_negative = true;
            let w = affinity(e, c.neg_beta);
            for (k, p) in e.probs.iter().enumerate() {
                if c.mask_low < *p && *p < c.mask_high {
                    neg[k] += w;
                }
            }
        }
        for k in 0..out.len() {
            out[k] += c.pos_alpha * pos[k];
            if any_negative {
                out[k] -= c.neg_alpha * neg[k];
            }
        }
        out
    }
}

/// The official `update_cache`: a new class starts a list; a list with room appends; a full
/// list replaces its last (worst) entry only for a strictly lower entropy; an existing list
/// is then stably sorted by entropy.
fn update(list: &mut Vec<TdaEntry>, item: TdaEntry, capacity: usize) -> CacheUpdate {
    let action = if list.is_empty() {
        list.push(item);
        return CacheUpdate::Created;
    } else if list.len() < capacity {
        list.push(item);
        CacheUpdate::Appended
    } else if item.loss < list[list.len() - 1].loss {
        *list.last_mut().expect("a full list is not empty") = item;
        CacheUpdate::Replaced
    } else {
        CacheUpdate::Rejected
    };
    list.sort_by(|a, b| a.loss.total_cmp(&b.loss));
    action
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn argmax(x: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best
}

fn log_softmax(x: &[f64]) -> Vec<f64> {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    x.iter().map(|v| v - lse).collect()
}

#[derive(Debug)]
struct Tda {
    caches: TdaCaches,
}

/// Rows of a `[n, m]` tensor as f64.
fn rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(t.to_dtype(DType::F64)?.to_vec2::<f64>()?)
}

fn to_tensor(rows: &[Vec<f64>], device: &Device, dtype: DType) -> Result<Tensor> {
    let n = rows.len();
    let m = rows.first().map_or(0, Vec::len);
    Ok(Tensor::from_vec(rows.concat(), (n, m), &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?)
}

impl TtaMethod for Tda {
    fn logits(&self, z: &Tensor, cos: &Tensor) -> Result<Tensor> {
        let (z_rows, cos_rows) = (rows(z)?, rows(cos)?);
        let out: Vec<Vec<f64>> = z_rows.iter().zip(&cos_rows).map(|(f, c)| self.caches.logits(f, c)).collect();
        to_tensor(&out, cos.device(), cos.dtype())
    }

    fn observe(&mut self, z: &Tensor, cos: &Tensor) -> Result<Tensor> {
        let (z_rows, cos_rows) = (rows(z)?, rows(cos)?);
        let out: Vec<Vec<f64>> = z_rows.iter().zip(&cos_rows).map(|(f, c)| self.caches.step(f, c).logits).collect();
        to_tensor(&out, cos.device(), cos.dtype())
    }

    fn ood_scores(&self, _cos: &Tensor, logits: &Tensor) -> Result<Tensor> {
        // The official score for TDA: the maximum softmax of the final logits.
        Ok(candle_nn::ops::softmax_last_dim(&logits.contiguous()?)?.max(candle_core::D::Minus1)?)
    }

    fn kept(&self) -> usize {
        self.caches.len()
    }

    fn reset(&mut self) -> Result<()> {
        self.caches.clear();
        Ok(())
    }

    fn save(&self, state: &mut MethodState) -> Result<()> {
        // Entries in class order, then list order, so loading rebuilds the same lists.
        for (name, lists) in [("positive", &self.caches.positive), ("negative", &self.caches.negative)] {
            let entries: Vec<(usize, &TdaEntry)> = lists.iter().enumerate().flat_map(|(c, l)| l.iter().map(move |e| (c, e))).collect();
            if entries.is_empty() {
                continue;
            }
            let classes: Vec<u32> = entries.iter().map(|(c, _)| *c as u32).collect();
            let n = classes.len();
            let t = &mut state.tensors;
            t.insert(format!("tda.{name}.class"), Tensor::from_vec(classes, n, &Device::Cpu)?);
            t.insert(format!("tda.{name}.loss"), Tensor::from_vec(entries.iter().map(|(_, e)| e.loss).collect::<Vec<_>>(), n, &Device::Cpu)?);
            let features: Vec<Vec<f64>> = entries.iter().map(|(_, e)| e.feature.clone()).collect();
            t.insert(format!("tda.{name}.feature"), to_tensor(&features, &Device::Cpu, DType::F64)?);
            if name == "negative" {
                let probs: Vec<Vec<f64>> = entries.iter().map(|(_, e)| e.probs.clone()).collect();
                t.insert(format!("tda.{name}.probs"), to_tensor(&probs, &Device::Cpu, DType::F64)?);
            }
        }
        Ok(())
    }

    fn load(&mut self, state: &MethodState, path: &Path) -> Result<()> {
        self.caches.clear();
        let num_classes = self.caches.positive.len();
        for name in ["positive", "negative"] {
            let Some(classes) = state.tensors.get(&format!("tda.{name}.class")) else { continue };
            let classes = classes.to_vec1::<u32>()?;
            let losses = state.tensor(&format!("tda.{name}.loss"), path)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let features = rows(state.tensor(&format!("tda.{name}.feature"), path)?)?;
            let probs = match name {
                "negative" => rows(state.tensor(&format!("tda.{name}.probs"), path)?)?,
                _ => vec![Vec::new(); classes.len()],
            };
            if losses.len() != classes.len() || features.len() != classes.len() || probs.len() != classes.len() {
                return Err(Error::config(path, format!("saved state: the {name} cache's tensors disagree in length")));
            }
            for (((class, loss), feature), probs) in classes.into_iter().zip(losses).zip(features).zip(probs) {
                let class = class as usize;
                if class >= num_classes {
                    return Err(Error::config(path, format!("saved state: {name} cache entry of class {class}, but there are {num_classes} classes")));
                }
                let lists = if name == "positive" { &mut self.caches.positive } else { &mut self.caches.negative };
                lists[class].push(TdaEntry { feature, loss, probs });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(loss: f64) -> TdaEntry {
        TdaEntry { feature: vec![loss], loss, probs: Vec::new() }
    }

    #[test]
    fn a_full_list_takes_only_a_strictly_better_newcomer_in_place_of_its_last() {
        let mut list = Vec::new();
        assert_eq!(update(&mut list, entry(0.5), 2), CacheUpdate::Created);
        assert_eq!(update(&mut list, entry(0.1), 2), CacheUpdate::Appended);
        assert_eq!(list.iter().map(|e| e.loss).collect::<Vec<_>>(), [0.1, 0.5]);
        assert_eq!(update(&mut list, entry(0.5), 2), CacheUpdate::Rejected);
        assert_eq!(update(&mut list, entry(0.3), 2), CacheUpdate::Replaced);
        assert_eq!(list.iter().map(|e| e.loss).collect::<Vec<_>>(), [0.1, 0.3]);
    }

    #[test]
    fn an_image_sees_itself_in_the_positive_cache() {
        // One class list holding only the image: affinity 1, so the positive term is exactly
        // pos_alpha on its class (a closed form of the official update-then-predict order).
        let mut caches = TdaCaches::new(TdaConfig::official(false), 3);
        let f = [0.6, 0.8];
        let step = caches.step(&f, &[0.9, 0.1, 0.2]);
        assert_eq!(step.positive, CacheUpdate::Created);
        assert_eq!(step.negative, None, "a confident image is outside the entropy window");
        assert!((step.logits[0] - (90.0 + 2.0)).abs() < 1e-12 && (step.logits[1] - 10.0).abs() < 1e-12, "{:?}", step.logits);
    }
}
