//! The embedded default model: a small CLIP trained on Fashion-MNIST whose files are compiled
//! into the library, so an installed binary needs no repository and no download.
//!
//! The files are written once into `<cache>/models/default-<sha256 prefix>/` (see
//! [`cache_root`]) and loaded from there like any checkpoint; the directory name follows the
//! content, so a new build with other weights never reads a stale copy.
//!
//! ```
//! let dir = cliptta::source::default_model_dir()?;
//! assert!(dir.join("model.safetensors").is_file());
//! # Ok::<(), cliptta::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use include_dir::{include_dir, Dir};

use super::embedded;
use super::model::cache_root;
use crate::error::Result;

/// The classes the default model was trained on (Fashion-MNIST's ten, in label-id order).
///
/// They differ from the dataset's official names only where those are awkward in a caption
/// such as `a photo of a {}`: `T-shirt/top` becomes `t-shirt` (a slash reads as two objects and
/// "top" alone is ambiguous), and everything is lower case as in CLIP's own class lists.
/// Singular forms are kept ("trouser", as in the official list) so every name fits the same
/// templates.
pub const DEFAULT_MODEL_CLASSES: [&str; 10] =
    ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];

/// The environment variable that replaces the default model (a directory or a model URL).
pub const MODEL_ENV: &str = "CLIPTTA_MODEL";

/// `data/models/default`, as compiled in.
static FILES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/data/models/default");

fn content_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| embedded::content_id(&FILES))
}

/// The embedded default model as a local directory, written under [`cache_root`] on first use
/// (safe to call from several threads and processes at once).
pub fn default_model_dir() -> Result<PathBuf> {
    materialise_in(&cache_root())
}

/// [`default_model_dir`] under another cache root.
pub fn materialise_in(root: &Path) -> Result<PathBuf> {
    embedded::materialise(&FILES, &root.join("models"), "default", content_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn materialised_files_equal_the_repository_copy() {
        let root = tempfile::tempdir().unwrap();
        let dir = materialise_in(root.path()).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/default");
        let names = ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "README.md"];
        for name in names {
            assert_eq!(std::fs::read(dir.join(name)).unwrap(), std::fs::read(repo.join(name)).unwrap(), "{name}");
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), std::fs::read_dir(&repo).unwrap().count());
        // A second call reuses the copy; concurrent first calls agree.
        assert_eq!(materialise_in(root.path()).unwrap(), dir);
        let other = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| materialise_in(other.path()).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(dirs.iter().all(|d| d == &dirs[0] && d.join("model.safetensors").is_file()));
        let leftovers = std::fs::read_dir(other.path().join("models")).unwrap().count();
        assert_eq!(leftovers, 1, "temporary directories left behind");
    }
}
