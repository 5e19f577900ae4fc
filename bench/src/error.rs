//! The error type of the datasets, corruptions, lake writer and pretraining.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can fail when reading a dataset, corrupting an image, writing a lake or pretraining.
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

    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A dataset file is not installed where the crate looks for it.
    #[error("dataset file {path} is missing: run scripts/install-datasets.sh (as root) or set {env} to its directory")]
    DatasetMissing {
        /// The path that was tried.
        path: PathBuf,
        /// The environment variable that overrides the location.
        env: &'static str,
    },

    /// A dataset file exists but its content is not what its format requires.
    #[error("invalid dataset file {path}: {message}")]
    Dataset {
        /// The file that failed.
        path: PathBuf,
        /// What is wrong, with the offending position where known.
        message: String,
    },

    /// An argument the function cannot accept (a severity, a lake configuration, a batch size).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// Encoding or decoding an image in memory failed.
    #[error("image codec: {0}")]
    Image(#[from] image::ImageError),

    /// A tensor operation of pretraining failed.
    #[error("tensor operation: {0}")]
    Candle(#[from] candle_core::Error),

    /// The product library failed (loading, tokenising, writing a checkpoint).
    #[error(transparent)]
    Model(#[from] cliptta::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Write { path: path.into(), source }
    }

    pub(crate) fn dataset(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Dataset { path: path.into(), message: message.into() }
    }
}
