//! Named, shape-checked tensors from a memory-mapped `model.safetensors`.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Tensors by Hugging Face name, from a file or from memory, with a name prefix (like candle's
/// `VarBuilder::pp`) so that a weight's name leads to the struct that loads it.
#[derive(Clone)]
pub(crate) struct Weights<'a> {
    source: Source<'a>,
    prefix: String,
}

#[derive(Clone, Copy)]
enum Source<'a> {
    File(&'a SafetensorsFile),
    /// In-memory tensors, used as they are: when they are `Var`s (training), gradients reach
    /// them through every block built from them.
    Memory(&'a TensorMap),
}

/// Named in-memory tensors, with a label for error messages.
pub(crate) struct TensorMap {
    pub(crate) label: PathBuf,
    pub(crate) tensors: std::collections::HashMap<String, Tensor>,
}

impl TensorMap {
    pub(crate) fn root(&self) -> Weights<'_> {
        Weights { source: Source::Memory(self), prefix: String::new() }
    }
}

/// An opened (memory-mapped) safetensors file.
pub(crate) struct SafetensorsFile {
    path: PathBuf,
    tensors: MmapedSafetensors,
    dtype: DType,
    device: Device,
}

impl SafetensorsFile {
    /// Memory-maps `path`; tensors are converted to `dtype` on `device` as they are loaded.
    pub(crate) fn open(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        if !path.exists() {
            return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "file not found")));
        }
        // SAFETY: the file is mapped read-only; as for every mmap, it must not be truncated while
        // mapped. Checkpoints are immutable inputs, and tensors are copied out at load time.
        let tensors = unsafe { MmapedSafetensors::new(path) }
            .map_err(|e| Error::Weights { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(Self { path: path.to_path_buf(), tensors, dtype, device: device.clone() })
    }

    pub(crate) fn root(&self) -> Weights<'_> {
        Weights { source: Source::File(self), prefix: String::new() }
    }
}

impl<'a> Weights<'a> {
    /// A view whose names are prefixed by `name.`.
    pub(crate) fn pp(&self, name: impl std::fmt::Display) -> Weights<'a> {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{}", self.prefix, name) };
        Weights { source: self.source, prefix }
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// Whether the tensor exists (for optional weights such as biases).
    pub(crate) fn contains(&self, name: &str) -> bool {
        let full = self.full_name(name);
        match self.source {
            Source::File(f) => f.tensors.get(&full).is_ok(),
            Source::Memory(m) => m.tensors.contains_key(&full),
        }
    }

    /// Loads a tensor, checking its shape and converting it to the model dtype.
    pub(crate) fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        let file = match self.source {
            Source::File(f) => f,
            Source::Memory(m) => return self.get_memory(m, shape, name),
        };
        let full = self.full_name(name);
        let path = &file.path;
        let view = file
            .tensors
            .get(&full)
            .map_err(|_| Error::MissingTensor { path: path.clone(), name: full.clone() })?;
        if view.shape() != shape {
            return Err(Error::TensorShape {
                path: path.clone(),
                name: full,
                expected: shape.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        use safetensors::Dtype as St;
        if !matches!(view.dtype(), St::F32 | St::F16 | St::BF16 | St::F64) {
            return Err(Error::TensorDtype { path: path.clone(), name: full, dtype: format!("{:?}", view.dtype()) });
        }
        let tensor = file
            .tensors
            .load(&full, &file.device)
            .map_err(|e| Error::Weights { path: path.clone(), message: format!("tensor `{full}`: {e}") })?;
        Ok(tensor.to_dtype(file.dtype)?)
    }

    fn get_memory(&self, map: &TensorMap, shape: &[usize], name: &str) -> Result<Tensor> {
        let full = self.full_name(name);
        let t = map
            .tensors
            .get(&full)
            .ok_or_else(|| Error::MissingTensor { path: map.label.clone(), name: full.clone() })?;
        if t.dims() != shape {
            return Err(Error::TensorShape {
                path: map.label.clone(),
                name: full,
                expected: shape.to_vec(),
                actual: t.dims().to_vec(),
            });
        }
        Ok(t.clone())
    }
}
