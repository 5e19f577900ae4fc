//! The adaptable parameters: weight and bias of every LayerNorm of the vision tower.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::error::{Error, Result};

/// The vision tower's LayerNorm weights and biases as trainable [`Var`]s, in the order
/// `pre_layrnorm`, `layers.0.layer_norm1`, `layers.0.layer_norm2`, ..., `post_layernorm`, each as
/// (weight, bias). One set per adapting stream; the frozen model is shared.
#[derive(Debug)]
pub struct NormParams {
    vars: Vec<Var>,
    names: Vec<String>,
}

/// A copy of [`NormParams`] values, for reset and checkpoints.
#[derive(Debug, Clone)]
pub struct NormSnapshot {
    tensors: Vec<Tensor>,
}

impl NormSnapshot {
    /// The copied tensors, in [`NormParams`] order.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }
}

impl NormParams {
    pub(crate) fn new(initial: &[(String, Tensor)]) -> Result<Self> {
        let mut vars = Vec::with_capacity(initial.len());
        let mut names = Vec::with_capacity(initial.len());
        for (name, t) in initial {
            // A copy, so that updating this set never touches the shared checkpoint values.
            vars.push(Var::from_tensor(&t.copy()?)?);
            names.push(name.clone());
        }
        Ok(Self { vars, names })
    }

    /// Wraps tensors without copying them (they are made `Var`s if they are not already).
    pub(crate) fn shared(initial: &[(String, Tensor)]) -> Result<Self> {
        let vars = initial.iter().map(|(_, t)| Var::from_tensor(t)).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { vars, names: initial.iter().map(|(n, _)| n.clone()).collect() })
    }

    /// The trainable tensors, in canonical order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Hugging Face names of the tensors (e.g. `vision_model.pre_layrnorm.weight`).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The tensor of LayerNorm `index` (0 = pre, then two per block, last = post) as
    /// `(weight, bias)`.
    pub(crate) fn norm(&self, index: usize) -> (&Tensor, &Tensor) {
        (self.vars[2 * index].as_tensor(), self.vars[2 * index + 1].as_tensor())
    }

    /// Total number of scalars (39,936 for ViT-B/16).
    pub fn num_scalars(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// Copies the current values.
    pub fn snapshot(&self) -> Result<NormSnapshot> {
        Ok(NormSnapshot { tensors: self.vars.iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<_>>()? })
    }

    /// Restores values from a snapshot of a set with the same layout.
    pub fn restore(&self, snapshot: &NormSnapshot) -> Result<()> {
        if snapshot.tensors.len() != self.vars.len() {
            return Err(Error::State(format!(
                "snapshot has {} tensors, the model has {}",
                snapshot.tensors.len(),
                self.vars.len()
            )));
        }
        for (var, t) in self.vars.iter().zip(&snapshot.tensors) {
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }

    /// The values by name, for saving to safetensors.
    pub fn to_named(&self) -> Result<HashMap<String, Tensor>> {
        let snap = self.snapshot()?;
        Ok(self.names.iter().cloned().zip(snap.tensors).collect())
    }

    /// Sets the values from tensors by name; every name must be present with the right shape.
    pub fn load_named(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let mut values = Vec::with_capacity(self.vars.len());
        for (name, var) in self.names.iter().zip(&self.vars) {
            let t = tensors
                .get(name)
                .ok_or_else(|| Error::State(format!("adapted state lacks tensor `{name}`")))?;
            if t.dims() != var.dims() {
                return Err(Error::State(format!(
                    "adapted state tensor `{name}` has shape {:?}, the model needs {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            values.push(t.clone());
        }
        self.restore(&NormSnapshot { tensors: values })
    }
}
