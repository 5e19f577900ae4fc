//! The collapse and drift guard (not part of the paper): watches each batch's
//! [`BatchDiagnostics`] and warns, resets the adapter to its checkpoint, or stops the job when
//! adaptation goes wrong.
//!
//! Three triggers:
//! - **class collapse**: over the last `guard_window` adapted batches, fewer distinct classes
//!   were predicted than `guard_min_class_ratio` times those the checkpoint's own (zero-shot)
//!   predictions give over the stream's first `guard_window` batches. The reference is the
//!   stream itself, so a lake that holds few classes is not mistaken for a collapse; it costs
//!   one extra forward pass for each of the first `guard_window` batches.
//! - **drift**: the adapted LayerNorms' relative distance from the checkpoint exceeds
//!   `guard_max_distance` (or is not finite).
//! - **non-finite loss**: every step of a batch was skipped because its loss or a gradient was
//!   not finite.
//!
//! After any trigger the window starts again, so a persisting collapse is reported once per
//! window, not once per batch.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::diagnostics::{distinct_classes, BatchDiagnostics};
use crate::error::{Error, Result};

/// What the guard does when it triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// Not watched.
    Off,
    /// Logs a warning and records the event in the batch's diagnostics.
    #[default]
    Warn,
    /// Also returns the LayerNorms and the method's state to the checkpoint after the batch.
    Reset,
    /// Fails the job with an error naming the trigger (committed checkpoint parts are kept).
    Stop,
}

impl GuardAction {
    /// Every action.
    pub const ALL: [GuardAction; 4] = [Self::Off, Self::Warn, Self::Reset, Self::Stop];

    /// The option's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Warn => "warn",
            Self::Reset => "reset",
            Self::Stop => "stop",
        }
    }
}

impl std::fmt::Display for GuardAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for GuardAction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == s.trim()).ok_or_else(|| {
            Error::InvalidInput(format!("unknown guard action `{}`; expected off, warn, reset or stop", s.trim()))
        })
    }
}

/// The guard's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GuardConfig {
    /// What to do on a trigger.
    pub action: GuardAction,
    /// Batches watched together (and batches of the zero-shot reference).
    pub window: usize,
    /// Collapse when the classes predicted over a window fall below this share of the reference's.
    pub min_class_ratio: f64,
    /// Drift when the relative distance from the checkpoint exceeds this.
    pub max_distance: f64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self { action: GuardAction::Warn, window: 8, min_class_ratio: 0.5, max_distance: 1.0 }
    }
}

impl GuardConfig {
    /// Checks the values: a positive window, a ratio in (0, 1], a positive distance.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(m));
        if self.window == 0 {
            return bad("`guard_window` must be at least 1".into());
        }
        if !(self.min_class_ratio > 0.0 && self.min_class_ratio <= 1.0) {
            return bad(format!("`guard_min_class_ratio` = {} is not in (0, 1]", self.min_class_ratio));
        }
        if !(self.max_distance.is_finite() && self.max_distance > 0.0) {
            return bad(format!("`guard_max_distance` = {} is not a positive number", self.max_distance));
        }
        Ok(())
    }
}

/// Why the guard triggered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardTrigger {
    /// Predictions concentrated on too few classes.
    ClassCollapse,
    /// The LayerNorms moved too far from the checkpoint.
    Drift,
    /// Every step of a batch had a non-finite loss or gradient.
    NonFinite,
}

impl GuardTrigger {
    /// The name written in diagnostics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClassCollapse => "class_collapse",
            Self::Drift => "drift",
            Self::NonFinite => "non_finite",
        }
    }
}

impl std::fmt::Display for GuardTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One trigger of the guard.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardEvent {
    /// What was seen.
    pub trigger: GuardTrigger,
    /// What was done.
    pub action: GuardAction,
    /// The numbers behind it, for people.
    pub detail: String,
}

/// The guard's running state over one adapter's stream.
#[derive(Debug, Clone)]
pub struct Guard {
    config: GuardConfig,
    /// The checkpoint's predictions over the stream's first batches.
    reference: Vec<u32>,
    reference_batches: usize,
    /// Predictions of the last adapted batches, oldest first.
    window: VecDeque<Vec<u32>>,
}

impl Guard {
    /// A guard with `config`.
    pub fn new(config: GuardConfig) -> Self {
        Self { config, reference: Vec::new(), reference_batches: 0, window: VecDeque::new() }
    }

    /// The settings.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// Whether the next batch's zero-shot predictions are wanted for the reference.
    pub fn wants_reference(&self) -> bool {
        self.config.action != GuardAction::Off && self.reference_batches < self.config.window
    }

    /// Adds one batch's zero-shot predictions to the reference.
    pub fn add_reference(&mut self, labels: &[u32]) {
        self.reference.extend_from_slice(labels);
        self.reference_batches += 1;
    }

    /// Watches one batch; returns the event when a trigger fires (the caller acts on it).
    pub fn observe(&mut self, d: &BatchDiagnostics, labels: &[u32]) -> Option<GuardEvent> {
        if self.config.action == GuardAction::Off || !d.adapted {
            return None;
        }
        let event = |trigger, detail| Some(GuardEvent { trigger, action: self.config.action, detail });
        let fired = if !d.steps.is_empty() && d.skipped_steps as usize == d.steps.len() {
            event(GuardTrigger::NonFinite, format!("all {} steps had a non-finite loss or gradient", d.steps.len()))
        } else if !(d.distance as f64 <= self.config.max_distance) {
            event(
                GuardTrigger::Drift,
                format!("the LayerNorms are {:.4} of their norm away from the checkpoint (guard_max_distance {})", d.distance, self.config.max_distance),
            )
        } else {
            self.window.push_back(labels.to_vec());
            while self.window.len() > self.config.window {
                self.window.pop_front();
            }
            self.collapse()
        };
        if fired.is_some() {
            self.window.clear();
        }
        fired
    }

    fn collapse(&self) -> Option<GuardEvent> {
        if self.window.len() < self.config.window || self.reference_batches < self.config.window {
            return None;
        }
        let recent: Vec<u32> = self.window.iter().flatten().copied().collect();
        let (now, then) = (distinct_classes(&recent), distinct_classes(&self.reference));
        ((now as f64) < self.config.min_class_ratio * then as f64).then(|| GuardEvent {
            trigger: GuardTrigger::ClassCollapse,
            action: self.config.action,
            detail: format!(
                "{now} classes predicted over the last {w} batches, where the checkpoint predicts {then} over the first {w} (guard_min_class_ratio {})",
                self.config.min_class_ratio,
                w = self.config.window
            ),
        })
    }

    /// Forgets the window (after the adapter was reset); the reference stays.
    pub fn clear(&mut self) {
        self.window.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tta::Method;

    fn batch(distance: f32, steps: usize, skipped: u64) -> BatchDiagnostics {
        BatchDiagnostics {
            method: Method::Tent,
            rows: 4,
            adapted: true,
            steps: vec![Default::default(); steps],
            skipped_steps: skipped,
            mean_entropy: 0.0,
            marginal_entropy: 0.0,
            classes_predicted: 0,
            id_fraction: None,
            threshold: None,
            distance,
            seconds: 0.0,
        }
    }

    #[test]
    fn collapse_is_measured_against_the_checkpoints_own_predictions() {
        let mut g = Guard::new(GuardConfig { window: 2, ..GuardConfig::default() });
        // The checkpoint predicts 4 classes over the first two batches.
        for labels in [[0, 1, 2, 3], [0, 1, 2, 3]] {
            assert!(g.wants_reference());
            g.add_reference(&labels);
        }
        assert!(!g.wants_reference());
        assert_eq!(g.observe(&batch(0.1, 1, 0), &[0, 1, 2, 0]), None, "a window is not full yet");
        assert_eq!(g.observe(&batch(0.1, 1, 0), &[0, 1, 0, 0]), None, "3 of 4 classes is above half");
        // Two batches predicting one class: 1 < 0.5 × 4.
        let e = g.observe(&batch(0.1, 1, 0), &[0, 0, 0, 0]);
        assert_eq!(e, None, "the window still holds a 3-class batch");
        let e = g.observe(&batch(0.1, 1, 0), &[0, 0, 0, 0]).expect("collapse");
        assert_eq!((e.trigger, e.action), (GuardTrigger::ClassCollapse, GuardAction::Warn));
        assert!(e.detail.contains("1 classes") && e.detail.contains("predicts 4"), "{}", e.detail);
        // The window starts again after a trigger.
        assert_eq!(g.observe(&batch(0.1, 1, 0), &[0, 0, 0, 0]), None);
    }

    #[test]
    fn a_lake_of_few_classes_is_not_a_collapse() {
        let mut g = Guard::new(GuardConfig { window: 1, ..GuardConfig::default() });
        g.add_reference(&[5, 5, 5, 5]);
        assert_eq!(g.observe(&batch(0.1, 1, 0), &[5, 5, 5, 5]), None);
    }

    #[test]
    fn drift_and_non_finite_losses() {
        let mut g = Guard::new(GuardConfig { action: GuardAction::Stop, ..GuardConfig::default() });
        assert_eq!(g.observe(&batch(2.0, 1, 0), &[0]).unwrap().trigger, GuardTrigger::Drift);
        assert_eq!(g.observe(&batch(f32::NAN, 1, 0), &[0]).unwrap().trigger, GuardTrigger::Drift);
        assert_eq!(g.observe(&batch(0.0, 3, 3), &[0]).unwrap().trigger, GuardTrigger::NonFinite);
        assert_eq!(g.observe(&batch(0.0, 3, 2), &[0]), None, "one finite step is enough");
        let mut off = Guard::new(GuardConfig { action: GuardAction::Off, ..GuardConfig::default() });
        assert!(!off.wants_reference());
        assert_eq!(off.observe(&batch(9.0, 1, 1), &[0]), None);
    }

    #[test]
    fn settings_are_checked() {
        assert!(GuardConfig::default().validate().is_ok());
        for bad in [
            GuardConfig { window: 0, ..GuardConfig::default() },
            GuardConfig { min_class_ratio: 0.0, ..GuardConfig::default() },
            GuardConfig { min_class_ratio: 1.5, ..GuardConfig::default() },
            GuardConfig { max_distance: f64::NAN, ..GuardConfig::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!("reset".parse::<GuardAction>().unwrap(), GuardAction::Reset);
        assert!("later".parse::<GuardAction>().unwrap_err().to_string().contains("off, warn, reset or stop"));
    }
}
