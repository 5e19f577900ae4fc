//! Checkpoints kept in an object store (`'model', 's3://bucket/models/clip/'`): the Hugging
//! Face files are downloaded into a local cache directory and loaded from there like any local
//! checkpoint.
//!
//! One cache directory per model URL, `<cache root>/models/<sha256 of the URL>/`, where the
//! cache root is `$CLIPTTA_CACHE_DIR`, else `$XDG_CACHE_HOME/cliptta`, else
//! `~/.cache/cliptta`. A `manifest.json` there records each file's size, ETag and
//! modification time as the store reported them, so a later run asks the store for metadata
//! only and downloads just the files that changed. Which model is *loaded* is decided by the
//! content hash of the files (`model::load_cached`), not by this manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::location::ImageLocation;
use crate::error::{Error, Result};

/// Where a checkpoint lives: a local directory, or a prefix in an object store.
#[derive(Debug, Clone)]
pub enum ModelLocation {
    /// A directory in the Hugging Face layout.
    Local(PathBuf),
    /// A URL prefix (`s3://`, `gs://`, `az://`, `http(s)://`, `memory://`) holding the same
    /// files.
    Remote(ImageLocation),
}

/// The checkpoint files, and whether each is required.
pub const MODEL_FILES: &[(&str, bool)] =
    &[("config.json", true), ("model.safetensors", true), ("tokenizer.json", true), ("preprocessor_config.json", false)];

const MANIFEST: &str = "manifest.json";

impl ModelLocation {
    /// A local path, a `file://` URL (read in place), or an object-store URL. Does no I/O.
    pub fn parse(location: &str) -> Result<Self> {
        let trimmed = location.trim();
        if !trimmed.contains("://") {
            return Ok(Self::Local(PathBuf::from(trimmed)));
        }
        let bad = |message: &str| Error::Location { location: trimmed.to_string(), message: message.to_string() };
        if trimmed.starts_with("file://") {
            let url = url::Url::parse(trimmed).map_err(|e| bad(&e.to_string()))?;
            return url.to_file_path().map(Self::Local).map_err(|()| bad("not a local file path"));
        }
        let parsed = ImageLocation::parse(trimmed)?;
        if parsed.has_glob() {
            return Err(bad("a model location names one directory; globs are not allowed"));
        }
        Ok(Self::Remote(parsed))
    }

    /// The local directory, if the model is local.
    pub fn local_dir(&self) -> Option<&Path> {
        match self {
            Self::Local(p) => Some(p),
            Self::Remote(_) => None,
        }
    }
}

impl From<PathBuf> for ModelLocation {
    fn from(p: PathBuf) -> Self {
        Self::Local(p)
    }
}

impl From<&Path> for ModelLocation {
    fn from(p: &Path) -> Self {
        Self::Local(p.to_path_buf())
    }
}

impl PartialEq for ModelLocation {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Local(a), Self::Local(b)) => a == b,
            (Self::Remote(a), Self::Remote(b)) => a.original() == b.original(),
            _ => false,
        }
    }
}

/// Serialised as its text (a path or a URL), as it is written in an option.
impl Serialize for ModelLocation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Local(dir) => dir.serialize(serializer),
            Self::Remote(_) => serializer.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for ModelLocation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for ModelLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::Remote(l) => write!(f, "{}", l.original()),
        }
    }
}

/// The root of cliptta's local cache: `$CLIPTTA_CACHE_DIR`, else `$XDG_CACHE_HOME/cliptta`,
/// else `$HOME/.cache/cliptta`, else `cliptta-cache` in the temporary directory.
pub fn cache_root() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("CLIPTTA_CACHE_DIR") {
        return dir;
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return dir.join("cliptta");
    }
    if let Some(home) = var("HOME") {
        return home.join(".cache").join("cliptta");
    }
    std::env::temp_dir().join("cliptta-cache")
}

/// The cache directory of a model URL under `root`.
pub fn model_cache_dir(root: &Path, location: &ImageLocation) -> PathBuf {
    let url = location.object_url(location.prefix());
    root.join("models").join(hex::encode(Sha256::digest(url.trim_end_matches('/').as_bytes())))
}

/// What the store said about one cached file when it was downloaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FileStamp {
    size: u64,
    e_tag: Option<String>,
    last_modified: String,
}

impl FileStamp {
    fn of(meta: &ObjectMeta) -> Self {
        Self { size: meta.size, e_tag: meta.e_tag.clone(), last_modified: meta.last_modified.to_rfc3339() }
    }
}

type Manifest = BTreeMap<String, FileStamp>;

/// Brings the checkpoint files under `location` into its cache directory under `root`
/// (downloading only those whose store metadata changed) and returns that directory.
/// `names` limits the files fetched (for example to `config.json` alone when planning needs
/// only the embedding width); `None` fetches all of [`MODEL_FILES`].
pub async fn fetch_model(store: &Arc<dyn ObjectStore>, location: &ImageLocation, root: &Path, names: Option<&[&str]>) -> Result<PathBuf> {
    let dir = model_cache_dir(root, location);
    tokio::fs::create_dir_all(&dir).await.map_err(|e| Error::write(&dir, e))?;
    let manifest_path = dir.join(MANIFEST);
    // An unreadable or stale manifest only costs a download.
    let mut manifest: Manifest =
        std::fs::read(&manifest_path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default();
    for &(name, required) in MODEL_FILES.iter().filter(|(n, _)| names.is_none_or(|names| names.contains(n))) {
        let path = location.prefix().clone().join(name);
        let url = location.object_url(&path);
        let local = dir.join(name);
        let meta = match store.head(&path).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) if !required => {
                // An optional file that went away must not be used from a previous download.
                if manifest.remove(name).is_some() || local.exists() {
                    tokio::fs::remove_file(&local).await.or_else(ignore_missing).map_err(|e| Error::write(&local, e))?;
                }
                continue;
            }
            Err(source) => return Err(Error::Fetch { location: url, source }),
        };
        let stamp = FileStamp::of(&meta);
        let fresh = manifest.get(name) == Some(&stamp) && std::fs::metadata(&local).is_ok_and(|m| m.len() == stamp.size);
        if !fresh {
            tracing::info!(%url, bytes = stamp.size, "downloading model file");
            download(store, &path, &url, &local).await?;
            manifest.insert(name.to_string(), stamp);
        }
    }
    write_atomically(&manifest_path, &serde_json::to_vec_pretty(&manifest).map_err(|e| Error::InvalidInput(e.to_string()))?).await?;
    Ok(dir)
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Streams one object to `local` through a temporary file renamed into place, so a reader
/// never sees a half-written checkpoint and the weights never sit whole in memory.
async fn download(store: &Arc<dyn ObjectStore>, path: &object_store::path::Path, url: &str, local: &Path) -> Result<()> {
    let fetch_err = |source| Error::Fetch { location: url.to_string(), source };
    let tmp = temp_path(local);
    let mut file = tokio::fs::File::create(&tmp).await.map_err(|e| Error::write(&tmp, e))?;
    let mut body = store.get(path).await.map_err(fetch_err)?.into_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(fetch_err)?;
        file.write_all(&chunk).await.map_err(|e| Error::write(&tmp, e))?;
    }
    file.flush().await.map_err(|e| Error::write(&tmp, e))?;
    drop(file);
    tokio::fs::rename(&tmp, local).await.map_err(|e| Error::write(local, e))
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    tokio::fs::write(&tmp, bytes).await.map_err(|e| Error::write(&tmp, e))?;
    tokio::fs::rename(&tmp, path).await.map_err(|e| Error::write(path, e))
}

/// A sibling name unique to this process and call (concurrent downloads of one model, in one
/// process or several, each write their own file and rename it).
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.part", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::path::Path as ObjectPath;

    #[test]
    fn parses_model_locations() {
        assert!(matches!(ModelLocation::parse("data/models/default").unwrap(), ModelLocation::Local(p) if p == Path::new("data/models/default")));
        assert!(matches!(ModelLocation::parse("file:///opt/m").unwrap(), ModelLocation::Local(p) if p == Path::new("/opt/m")));
        let remote = ModelLocation::parse("s3://bucket/models/tiny/").unwrap();
        assert_eq!(remote.to_string(), "s3://bucket/models/tiny/");
        assert!(remote.local_dir().is_none());
        for (bad, needle) in [("s3://bucket/models/*", "globs"), ("ftp://x/m", "unsupported scheme")] {
            let err = ModelLocation::parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn downloads_changed_files_only_and_drops_vanished_optional_ones() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for (name, body) in [("config.json", "{}"), ("model.safetensors", "weights"), ("tokenizer.json", "tok"), ("preprocessor_config.json", "pre")] {
            store.put(&ObjectPath::from(format!("m/{name}")), body.as_bytes().to_vec().into()).await.unwrap();
        }
        let root = tempfile::tempdir().unwrap();
        let location = ImageLocation::parse("memory:///m/").unwrap();
        let dir = fetch_model(&store, &location, root.path(), None).await.unwrap();
        assert_eq!(dir, model_cache_dir(root.path(), &location));
        assert_eq!(std::fs::read_to_string(dir.join("model.safetensors")).unwrap(), "weights");

        // A file edited locally is kept while the store's copy is unchanged (no download) ...
        std::fs::write(dir.join("tokenizer.json"), "TOK").unwrap();
        fetch_model(&store, &location, root.path(), None).await.unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("tokenizer.json")).unwrap(), "TOK");
        // ... and replaced once the store's copy changes; a removed optional file goes away.
        store.put(&ObjectPath::from("m/tokenizer.json"), b"tok2".to_vec().into()).await.unwrap();
        store.delete(&ObjectPath::from("m/preprocessor_config.json")).await.unwrap();
        fetch_model(&store, &location, root.path(), None).await.unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("tokenizer.json")).unwrap(), "tok2");
        assert!(!dir.join("preprocessor_config.json").exists());

        store.delete(&ObjectPath::from("m/model.safetensors")).await.unwrap();
        let err = fetch_model(&store, &location, root.path(), None).await.unwrap_err();
        assert_eq!(err.status(), crate::RowStatus::FetchError);
        assert!(err.to_string().contains("memory:///m/model.safetensors"), "{err}");
    }
}
