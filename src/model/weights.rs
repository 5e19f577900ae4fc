//! Named, shape-checked tensors from a memory-mapped `model.safetensors`.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// A safetensors file opened for loading, with a name prefix (like candle's `VarBuilder::pp`)
/// so that a weight's Hugging Face name leads to the struct that loads it.
#[derive(Clone)]
pub(crate) struct Weights<'a> {
    file: &'a SafetensorsFile,
    prefix: String,
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
        Weights { file: self, prefix: String::new() }
    }
}

impl<'a> Weights<'a> {
    /// A view whose names are prefixed by `name.`.
    pub(crate) fn pp(&self, name: impl std::fmt::Display) -> Weights<'a> {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{}", self.prefix, name) };
        Weights { file: self.file, prefix }
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
        self.file.tensors.get(&self.full_name(name)).is_ok()
    }

    /// Loads a tensor, checking its shape and converting it to the model dtype.
    pub(crate) fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        let full = self.full_name(name);
        let path = &self.file.path;
        let view = self
            .file
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
        let tensor = self
            .file
            .tensors
            .load(&full, &self.file.device)
            .map_err(|e| Error::Weights { path: path.clone(), message: format!("tensor `{full}`: {e}") })?;
        Ok(tensor.to_dtype(self.file.dtype)?)
    }
}
