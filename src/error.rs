//! The crate's error type.
//!
//! Every variant that comes from a file or a tensor names that file or tensor, so a user can fix a
//! broken checkpoint without a debugger.

use std::path::PathBuf;

use crate::row_status::RowStatus;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors raised by model loading, preprocessing, adaptation, sources and the SQL layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (config, preprocessor config) is not valid or has wrong field types.
    #[error("invalid JSON in {path}: {source}")]
    Json {
        /// The file that failed to parse.
        path: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },

    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration in {path}: {message}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A safetensors file could not be opened or parsed.
    #[error("cannot load weights from {path}: {message}")]
    Weights {
        /// The safetensors file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// A tensor the model needs is absent from the checkpoint.
    #[error("tensor `{name}` is missing from {path}")]
    MissingTensor {
        /// The safetensors file.
        path: PathBuf,
        /// The Hugging Face name of the tensor.
        name: String,
    },

    /// A tensor has a shape the configuration does not allow.
    #[error("tensor `{name}` in {path} has shape {actual:?}, expected {expected:?} from config.json")]
    TensorShape {
        /// The safetensors file.
        path: PathBuf,
        /// The Hugging Face name of the tensor.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape stored in the file.
        actual: Vec<usize>,
    },

    /// A tensor is stored with a dtype this crate cannot convert.
    #[error("tensor `{name}` in {path} has unsupported dtype {dtype}")]
    TensorDtype {
        /// The safetensors file.
        path: PathBuf,
        /// The Hugging Face name of the tensor.
        name: String,
        /// The dtype found.
        dtype: String,
    },

    /// tokenizer.json could not be loaded or used.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// The caller passed something the API cannot accept (an option value, a shape, an empty
    /// class list, an image without pixels). Reserved for user input.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A device was asked for that this build or machine does not provide.
    #[error("device `{0}` is not available: {1}")]
    Device(String, String),

    /// A tensor operation failed during a named step of the model or the adapter.
    #[error("tensor operation failed during {during}: {source}")]
    Tensor {
        /// The step (`CLIPTTA step 3 of batch 12`, `prediction of batch 12`, ...).
        during: String,
        /// candle's error (shape, dtype, device), with its own backtrace.
        #[source]
        source: candle_core::Error,
    },

    /// A tensor operation failed outside a named step (see [`Error::Tensor`]).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// A saved or shipped adapter state does not fit the adapter that reads it (tensor count,
    /// shapes, labels, parameter list).
    #[error("adapter state does not fit: {0}")]
    State(String),

    /// A checkpoint directory holds a job made with other settings; each difference is named.
    #[error("checkpoint {dir} was made by a different job: {}", differences.join("; "))]
    CheckpointMismatch {
        /// The checkpoint directory.
        dir: PathBuf,
        /// `setting: was → now`, one per difference.
        differences: Vec<String>,
    },

    /// The adaptation guard stopped the job (`guard => 'stop'`); earlier commits are kept.
    #[error("the adaptation guard stopped the job after batch {batch}: {trigger}: {detail}")]
    GuardStopped {
        /// The adapter's batch count when it triggered.
        batch: u64,
        /// The trigger's name (`class_collapse`, `drift`, `non_finite`).
        trigger: &'static str,
        /// The numbers behind it.
        detail: String,
    },

    /// A distributed plan node could not be encoded or decoded (foreign or truncated bytes,
    /// settings that do not validate on the receiving process).
    #[error("{0}")]
    Plan(String),

    /// An internal invariant broke (a poisoned lock, a mismatch between internal lists). Not
    /// the caller's fault; please report it.
    #[error("internal error: {0}")]
    Internal(String),

    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Encoding or decoding an image in memory failed.
    #[error(transparent)]
    Image(#[from] image::ImageError),
    /// Image bytes exceed a configured limit (bytes, pixels or a side); the row's status is
    /// `too_large`.
    #[error("{what} {actual} exceeds the limit of {limit}")]
    TooLarge {
        /// Which limit: `size in bytes`, `pixel count`, `width`, `height`.
        what: &'static str,
        /// The value found.
        actual: u64,
        /// The configured limit.
        limit: u64,
    },

    /// The decoder refused the image under its memory or dimension limits; the row's status is
    /// `too_large`.
    #[error("image exceeds the decoder's limits: {0}")]
    DecoderLimit(String),

    /// Bytes that are not a decodable image (empty, unknown format, corrupt, truncated); the row's
    /// status is `decode_error`.
    #[error("cannot decode image: {0}")]
    Decode(String),

    /// An object could not be read from its store; the row's status is `fetch_error`.
    #[error("cannot fetch {location}: {source}")]
    Fetch {
        /// The object's URL.
        location: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },

    /// A fetch did not finish in time; the row's status is `fetch_error`.
    #[error("fetching {location} timed out after {seconds} s")]
    FetchTimeout {
        /// The object's URL.
        location: String,
        /// The timeout.
        seconds: f64,
    },

    /// A fetch that retried until its deadline without an answer; the row's status is
    /// `fetch_error`.
    #[error("fetching {location}: no answer within the fetch deadline of {seconds} s ({attempts} attempts{last})")]
    FetchDeadline {
        /// The object's URL.
        location: String,
        /// The deadline.
        seconds: f64,
        /// Attempts made.
        attempts: usize,
        /// `; last: <the last attempt's error>`, or empty.
        last: String,
    },

    /// A location (URL or path) is malformed or names an unsupported scheme.
    #[error("invalid location `{location}`: {message}")]
    Location {
        /// The location as given.
        location: String,
        /// What is wrong.
        message: String,
    },

    /// An object store could not be built, listed or read.
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),

    /// An Arrow operation failed.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Names the step a tensor error happened in: a bare [`Error::Candle`] becomes an
/// [`Error::Tensor`]; errors that already say what failed pass through.
pub(crate) trait During<T> {
    /// `what` is evaluated only on error.
    fn during(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> During<T> for Result<T> {
    fn during(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| match e {
            Error::Candle(source) => Error::Tensor { during: what(), source },
            other => other,
        })
    }
}

impl<T> During<T> for candle_core::Result<T> {
    fn during(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Tensor { during: what(), source })
    }
}

impl Error {
    /// The status of a row that failed with this error: `too_large`, `decode_error`,
    /// `fetch_error`, or `error` for anything else.
    pub fn status(&self) -> RowStatus {
        match self {
            Error::TooLarge { .. } | Error::DecoderLimit(_) => RowStatus::TooLarge,
            Error::Decode(_) => RowStatus::DecodeError,
            Error::Fetch { .. } | Error::FetchTimeout { .. } | Error::FetchDeadline { .. } => RowStatus::FetchError,
            _ => RowStatus::Error,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Write { path: path.into(), source }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Config { path: path.into(), message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    #[test]
    fn tensor_errors_name_their_step_and_chain_the_cause() {
        let a = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let failed: Result<Tensor> = a.matmul(&a).map_err(Error::from);
        let e = failed.during(|| "CLIPTTA step 3 of batch 1".into()).unwrap_err();
        assert!(e.to_string().starts_with("tensor operation failed during CLIPTTA step 3 of batch 1: "), "{e}");
        assert!(std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("shape")), "{e:?}");
        // An error that already says what failed passes through unchanged.
        let other = Err::<(), _>(Error::InvalidInput("the class list is empty".into())).during(|| "prediction".into()).unwrap_err();
        assert_eq!(other.to_string(), "invalid input: the class list is empty");
    }
}
