//! A process-wide cache of loaded models: one [`ClipModel`] per distinct checkpoint content
//! (and device and dtype), shared by every query, partition and CLI run in the process.
//!
//! Identity follows content: the same bytes at two paths give one model, and changed bytes at
//! one path give a fresh load. The key is [`checkpoint_hash`] (SHA-256 of config.json,
//! model.safetensors and tokenizer.json, the hash recorded in runs and saved states) plus a
//! hash of preprocessor_config.json, which changes predictions too.
//!
//! Hashing a large checkpoint takes seconds (ViT-B/32: ~600 MB), too slow for every query, so
//! each directory remembers the files' stamps when it was last hashed: size, modification
//! time, and on Unix the inode and the status-change time. While they are unchanged the
//! remembered hash is reused. A writer can reset the modification time (`touch -d`) but not
//! the status-change time, which every write and rename moves, so a rewrite is still seen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use super::clip::{checkpoint_hash, hash_files, ClipModel, LoadOptions};
use crate::error::{Error, Result};

/// (content hash, preprocessor hash, device and dtype).
type ModelKey = (String, String, String);

/// What identifies a file's version without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    /// Inode, status-change seconds and nanoseconds (Unix).
    unix: Option<(u64, i64, i64)>,
}

/// The stamps of a checkpoint's files, `None` for an absent optional file.
type Fingerprint = Vec<Option<Stamp>>;

#[derive(Default)]
struct State {
    /// Per (canonical directory, device and dtype): the stamps at the last hashing and the key.
    by_path: HashMap<(PathBuf, String), (Fingerprint, ModelKey)>,
    /// The loaded models.
    models: HashMap<ModelKey, Arc<ClipModel>>,
}

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    // The state stays consistent across a panic elsewhere (every update is one insert).
    STATE.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner())
}

const FILES: &[(&str, bool)] =
    &[("config.json", true), ("model.safetensors", true), ("tokenizer.json", true), ("preprocessor_config.json", false)];

fn stamp(path: &Path, required: bool) -> Result<Option<Stamp>> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    #[cfg(unix)]
    let unix = {
        use std::os::unix::fs::MetadataExt;
        Some((meta.ino(), meta.ctime(), meta.ctime_nsec()))
    };
    #[cfg(not(unix))]
    let unix = None;
    Ok(Some(Stamp { len: meta.len(), modified: meta.modified().ok(), unix }))
}

fn fingerprint(dir: &Path) -> Result<Fingerprint> {
    FILES.iter().map(|(name, required)| stamp(&dir.join(name), *required)).collect()
}

fn preprocessor_hash(dir: &Path) -> Result<String> {
    let path = dir.join("preprocessor_config.json");
    if path.is_file() {
        hash_files(&[&path])
    } else {
        Ok(String::new())
    }
}

/// Loads the model in `dir`, or returns the copy already loaded in this process for the same
/// content, device and dtype.
///
/// Blocking work (stats the files; hashes and loads them when they are new or changed): call
/// it from a blocking thread in async code. Two threads loading the same new content at once
/// may both read it; both get the copy that was cached first.
pub fn load_cached(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Arc<ClipModel>> {
    let dir = dir.as_ref();
    let canonical = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let device = format!("{}:{:?}", options.device, options.dtype);
    let path_key = (canonical.clone(), device.clone());
    let before = fingerprint(&canonical)?;
    {
        let state = state();
        if let Some((seen, key)) = state.by_path.get(&path_key) {
            if *seen == before {
                if let Some(model) = state.models.get(key) {
                    return Ok(model.clone());
                }
            }
        }
    }
    let hash = checkpoint_hash(&canonical)?;
    let key = (hash.clone(), preprocessor_hash(&canonical)?, device);
    let known = state().models.get(&key).cloned();
    if let Some(model) = known {
        remember(&mut state(), path_key, before, key);
        return Ok(model);
    }
    let model = Arc::new(ClipModel::load_hashed(&canonical, options, hash)?);
    if fingerprint(&canonical)? != before {
        // The files changed while being hashed or loaded: the hash may not describe what was
        // loaded, so this copy serves this caller only.
        tracing::warn!(dir = %canonical.display(), "model files changed while loading; not caching this copy");
        return Ok(model);
    }
    let mut state = state();
    let model = state.models.entry(key.clone()).or_insert(model).clone();
    remember(&mut state, path_key, before, key);
    Ok(model)
}

/// Maps a directory to a model key, and drops models no directory maps to any more (their
/// files were replaced); users holding such a model keep their copy.
fn remember(state: &mut State, path_key: (PathBuf, String), stamps: Fingerprint, key: ModelKey) {
    state.by_path.insert(path_key, (stamps, key));
    let State { by_path, models } = state;
    models.retain(|k, _| by_path.values().any(|(_, key)| key == k));
}

/// How many models the cache holds (for tests and diagnostics).
pub fn cached_model_count() -> usize {
    state().models.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_load_shares_the_model() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip");
        let a = load_cached(&dir, &LoadOptions::default()).unwrap();
        let b = load_cached(dir.join("../tiny-clip"), &LoadOptions::default()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let err = load_cached(dir.join("missing"), &LoadOptions::default()).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }

    fn copy_checkpoint(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for (name, _) in FILES {
            if from.join(name).is_file() {
                std::fs::copy(from.join(name), to.join(name)).unwrap();
            }
        }
    }

    #[test]
    fn identity_follows_content() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip");
        let tmp = tempfile::tempdir().unwrap();
        let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
        copy_checkpoint(&fixture, &one);
        copy_checkpoint(&fixture, &two);
        let opts = LoadOptions::default();
        // Same bytes at two paths: one model.
        let a = load_cached(&one, &opts).unwrap();
        let b = load_cached(&two, &opts).unwrap();
        assert!(Arc::ptr_eq(&a, &b));

        // Changed bytes at one path, size and modification time kept: a fresh load.
        let config = one.join("config.json");
        let mtime = std::fs::metadata(&config).unwrap().modified().unwrap();
        let text = std::fs::read_to_string(&config).unwrap();
        // Whitespace: same size, same meaning, different bytes.
        let changed = text.replacen(' ', "\t", 1);
        assert!(changed != text && changed.len() == text.len());
        std::fs::write(&config, &changed).unwrap();
        std::fs::File::options().write(true).open(&config).unwrap().set_modified(mtime).unwrap();
        let c = load_cached(&one, &opts).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "changed content must reload");
        assert_ne!(a.content_hash(), c.content_hash());
        // The other path still has the old content and the old model.
        assert!(Arc::ptr_eq(&b, &load_cached(&two, &opts).unwrap()));
        // Restoring the bytes at `one` maps it back to the first model.
        std::fs::write(&config, &text).unwrap();
        assert!(Arc::ptr_eq(&a, &load_cached(&one, &opts).unwrap()));
    }
}
