//! A process-wide cache of loaded models, so every query, partition and CLI run in a process
//! shares one copy of the weights.
//!
//! Keyed by the canonical directory, device and dtype; an entry is reused only while the
//! checkpoint files keep the size and modification time they had when loaded (a cheap stand-in
//! for the content hash, which [`ClipModel::content_hash`] records).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use super::clip::{ClipModel, LoadOptions};
use crate::error::{Error, Result};

type Key = (PathBuf, String);
type Fingerprint = Vec<(u64, Option<SystemTime>)>;

fn cache() -> &'static Mutex<HashMap<Key, (Fingerprint, Arc<ClipModel>)>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, (Fingerprint, Arc<ClipModel>)>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn fingerprint(dir: &Path) -> Result<Fingerprint> {
    ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .map(|name| {
            let path = dir.join(name);
            let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            Ok((meta.len(), meta.modified().ok()))
        })
        .collect()
}

/// Loads the model in `dir`, or returns the copy already loaded in this process.
///
/// Loading is blocking work (reads and hashes the weights); call it from a blocking thread in
/// async code. Two threads asking for the same model at once may both load it; one copy wins.
pub fn load_cached(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Arc<ClipModel>> {
    let dir = dir.as_ref();
    let canonical = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let key = (canonical.clone(), format!("{}:{:?}", options.device, options.dtype));
    let print = fingerprint(&canonical)?;
    if let Some((seen, model)) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        if *seen == print {
            return Ok(model.clone());
        }
    }
    let model = Arc::new(ClipModel::load(&canonical, options)?);
    cache().lock().unwrap_or_else(|p| p.into_inner()).insert(key, (print, model.clone()));
    Ok(model)
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
        assert!(load_cached(dir.join("missing"), &LoadOptions::default()).is_err());
    }
}
