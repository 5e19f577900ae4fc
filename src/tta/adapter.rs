//! The streaming adapter: adapt on a batch with the chosen method, then predict it with what
//! the method learnt.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Tensor, D};

use super::diagnostics::{distinct_classes, prediction_entropies, relative_distance, BatchDiagnostics};
use super::guard::{Guard, GuardAction, GuardConfig, GuardEvent};
use super::methods::{AdaptContext, BuildContext, MethodConfig, TtaMethod};
use super::prediction::BatchPrediction;
use super::reset::Reset;
use super::stats::AdaptStats;
use crate::error::{During, Error, Result};
use crate::model::{bind_to_thread, ClipModel, Grad, NormParams, NormSnapshot};

/// Runs one method over a stream of batches on a shared [`ClipModel`], with its own copy of the
/// vision LayerNorms, and predicts each batch after adapting on it (transductive, as in the
/// official protocol).
#[derive(Debug)]
pub struct Adapter {
    pub(super) model: Arc<ClipModel>,
    pub(super) classes: Vec<String>,
    pub(super) templates: Vec<String>,
    pub(super) class_embeddings: Tensor,
    pub(super) config: MethodConfig,
    pub(super) params: NormParams,
    pub(super) initial: NormSnapshot,
    pub(super) method: Box<dyn TtaMethod>,
    pub(super) stats: AdaptStats,
    pub(super) guard: Guard,
    /// The checkpoint's LayerNorms, for the guard's zero-shot reference (built when first needed).
    reference: Option<NormParams>,
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
    pub fn new(model: Arc<ClipModel>, classes: &[String], templates: &[String], config: MethodConfig) -> Result<Self> {
        let class_embeddings = model.class_embeddings(classes, templates)?;
        let params = model.vision().init_params()?;
        let initial = params.snapshot()?;
        let method = config.build(&BuildContext { model: &model, params: &params, num_classes: classes.len() })?;
        Ok(Self {
            model,
            classes: classes.to_vec(),
            templates: templates.to_vec(),
            class_embeddings,
            config,
            params,
            initial,
            method,
            stats: AdaptStats::default(),
            guard: Guard::new(GuardConfig::default()),
            reference: None,
        })
    }

    /// Watches adaptation with `config` ([`Guard`]; by default it warns).
    pub fn with_guard(mut self, config: GuardConfig) -> Self {
        self.guard = Guard::new(config);
        self
    }

    /// The guard's settings.
    pub fn guard(&self) -> &GuardConfig {
        self.guard.config()
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
        &self.config
    }

    /// The adapted LayerNorm parameters.
    pub fn params(&self) -> &NormParams {
        &self.params
    }

    /// Counters.
    pub fn stats(&self) -> &AdaptStats {
        &self.stats
    }

    /// Images or embeddings the method keeps from the stream (CLIPTTA's memory, TDA's caches).
    pub fn kept(&self) -> usize {
        self.method.kept()
    }

    /// The current open-set threshold (`None` in the closed set).
    pub fn threshold(&self) -> Result<Option<f32>> {
        self.method.threshold()
    }

    /// Returns the LayerNorms and everything the method learnt to their initial state.
    pub fn reset(&mut self) -> Result<()> {
        bind_to_thread(self.model.device())?;
        self.params.restore(&self.initial)?;
        self.method.reset()
    }

    /// Adapts on `pixels` (`[batch, 3, size, size]`, preprocessed) as the method prescribes,
    /// then predicts every image with what it learnt. The result carries the batch's
    /// [`BatchDiagnostics`] and, when the guard triggered, its event (after which, with
    /// [`GuardAction::Reset`], the adapter is back at the checkpoint; with
    /// [`GuardAction::Stop`] this returns [`Error::GuardStopped`]).
    pub fn adapt_and_predict(&mut self, pixels: &Tensor) -> Result<BatchPrediction> {
        // Callers move adapters between threads (tokio's blocking pool); this call frees last
        // batch's tensors before it launches anything.
        bind_to_thread(self.model.device())?;
        let start = Instant::now();
        let n = pixels.dim(0)?;
        if n == 0 {
            return Ok(BatchPrediction::default());
        }
        if self.config.reset() == Reset::PerBatch {
            self.reset()?;
        }
        let mut steps = Vec::new();
        let batch = self.stats.batches + 1;
        let skipped_before = self.stats.skipped_steps;
        let big_enough = n >= self.method.min_adapt_batch();
        let adapted = big_enough && self.config.method().adapts();
        if !big_enough {
            self.stats.unadapted_batches += 1;
        } else {
            let mut cx = AdaptContext {
                model: &self.model,
                params: &self.params,
                initial: &self.initial,
                class_embeddings: &self.class_embeddings,
                stats: &mut self.stats,
            };
            let title = self.config.method().title();
            let r = self.method.adapt(&mut cx, pixels, &mut steps);
            r.during(|| format!("{title} step {} of batch {batch}", steps.len() + 1))?;
        }
        self.stats.batches += 1;
        self.stats.images += n as u64;
        let (mut out, probs) = self.predict_learning(pixels).during(|| format!("prediction of batch {batch}"))?;
        let (mean_entropy, marginal_entropy) = prediction_entropies(&probs)?;
        let open_set = self.config.open_set();
        let diagnostics = BatchDiagnostics {
            method: self.config.method(),
            rows: n,
            adapted,
            steps,
            skipped_steps: self.stats.skipped_steps - skipped_before,
            mean_entropy,
            marginal_entropy,
            classes_predicted: distinct_classes(&out.labels),
            id_fraction: open_set.then(|| out.is_ood.iter().filter(|&&o| !o).count() as f32 / n as f32),
            threshold: out.threshold,
            distance: relative_distance(&self.params, &self.initial)?,
            seconds: 0.0,
        };
        out.guard = self.watch(pixels, &diagnostics, &out.labels).during(|| format!("guard after batch {batch}"))?;
        out.diagnostics = Some(BatchDiagnostics { seconds: start.elapsed().as_secs_f64(), ..diagnostics });
        Ok(out)
    }

    /// Runs the guard on one batch and acts on what it sees.
    fn watch(&mut self, pixels: &Tensor, diagnostics: &BatchDiagnostics, labels: &[u32]) -> Result<Option<GuardEvent>> {
        if !self.config.method().adapts() || self.guard.config().action == GuardAction::Off {
            return Ok(None);
        }
        if self.guard.wants_reference() {
            if self.reference.is_none() {
                self.reference = Some(self.model.vision().init_params()?);
            }
            let reference = self.reference.as_ref().ok_or_else(|| Error::Internal("no reference LayerNorms".into()))?;
            let z = self.model.image_embeddings(pixels, reference, Grad::Disabled)?;
            let zero_shot = z.matmul(&self.class_embeddings.t()?)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
            self.guard.add_reference(&zero_shot);
        }
        let Some(event) = self.guard.observe(diagnostics, labels) else {
            return Ok(None);
        };
        let batch = self.stats.batches;
        match event.action {
            GuardAction::Off => {}
            GuardAction::Warn => tracing::warn!("adaptation guard, batch {batch}: {}: {}", event.trigger, event.detail),
            GuardAction::Reset => {
                tracing::warn!("adaptation guard, batch {batch}: {}: {}; resetting to the checkpoint", event.trigger, event.detail);
                self.reset()?;
                self.guard.clear();
                self.stats.guard_resets += 1;
            }
            GuardAction::Stop => {
                return Err(Error::GuardStopped { batch, trigger: event.trigger.as_str(), detail: event.detail });
            }
        }
        Ok(Some(event))
    }

    /// Predicts with what the method has learnt, without adapting or learning from `pixels`.
    pub fn predict(&self, pixels: &Tensor) -> Result<BatchPrediction> {
        let z = self.model.image_embeddings(pixels, &self.params, Grad::Disabled)?;
        let cos = z.matmul(&self.class_embeddings.t()?)?;
        let logits = self.method.logits(&z, &cos)?;
        Ok(self.prediction(&z, &cos, &logits)?.0)
    }

    /// [`Adapter::predict`] for the batch being adapted on, which the method may learn from as
    /// it predicts (TDA's caches).
    fn predict_learning(&mut self, pixels: &Tensor) -> Result<(BatchPrediction, Tensor)> {
        let z = self.model.image_embeddings(pixels, &self.params, Grad::Disabled)?;
        let cos = z.matmul(&self.class_embeddings.t()?)?;
        let logits = self.method.observe(&z, &cos)?;
        self.prediction(&z, &cos, &logits)
    }

    /// The batch's outputs, and its class probabilities as a tensor.
    fn prediction(&self, z: &Tensor, cos: &Tensor, logits: &Tensor) -> Result<(BatchPrediction, Tensor)> {
        let probs = candle_nn::ops::softmax_last_dim(logits)?;
        let labels = probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let confidence = probs.max(D::Minus1)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let ood_score = self.method.ood_scores(cos, logits)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let threshold = self.method.threshold()?;
        let is_ood = match (self.method.is_ood(cos, &ood_score)?, threshold) {
            (Some(decisions), _) => decisions,
            (None, Some(t)) => ood_score.iter().map(|&s| s <= t).collect(),
            (None, None) => vec![false; labels.len()],
        };
        let out = BatchPrediction {
            labels,
            confidence,
            probs: probs.to_dtype(DType::F32)?.to_vec2::<f32>()?,
            embeddings: z.to_dtype(DType::F32)?.to_vec2::<f32>()?,
            ood_score,
            is_ood,
            threshold,
            diagnostics: None,
            guard: None,
        };
        Ok((out, probs))
    }
}
