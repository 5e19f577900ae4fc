//! The wire form of a cliptta scan: configuration only, never live handles.
//!
//! A plan node travels as a small binary envelope: an 8-byte magic, a kind byte, then three
//! length-prefixed sections: the node's settings as JSON, and the optional initial adapted
//! state (the `resume` file's safetensors and JSON halves) as raw bytes. Stores are rebuilt
//! from the location's URL and the object-store keys; the model is reloaded from its path and
//! checked against the content hash recorded when the plan was encoded; the state is written to
//! a local file on the receiving process and resumed from there.
//!
//! Why not protobuf: these nodes are ours alone and their settings already have one definition
//! ([`ClipTtaOptions`], parsed from `sql::OPTIONS`); the options travel as their own serde JSON,
//! so a field added there travels without a second definition here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::ClipModel;
use crate::source::{Extensions, ListingOrder, ModelLocation};
use crate::sql::{ClipTtaOptions, Reset};

/// First bytes of every payload, so our codec can tell its nodes from Ballista's.
pub const MAGIC: &[u8; 8] = b"CLIPTTA\x01";

/// What a payload describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `cliptta(...)` table (logical plan).
    Provider = 1,
    /// A `ClipTtaExec`.
    Exec = 2,
    /// An `ImageListingExec`.
    Listing = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Provider),
            2 => Some(Self::Exec),
            3 => Some(Self::Listing),
            _ => None,
        }
    }
}

/// The wire form of `options`: the options themselves, with the model path made absolute and
/// its content hash recorded (computed here if `options` has none), so every process can check
/// it loads the same checkpoint. `resume` is left out: its bytes travel as [`StateBytes`].
pub fn options_to_wire(options: &ClipTtaOptions) -> Result<ClipTtaOptions> {
    let mut wire = options.clone();
    wire.resume = None;
    // A local model travels as an absolute path with its content hash. A remote one travels
    // as its URL: every process fetches it into its own cache, where the manifest's ETags
    // keep the copies current, and a hash given in the options is still checked.
    if let ModelLocation::Local(dir) = &options.model {
        let dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        path_text(&dir)?;
        if wire.model_hash.is_none() {
            wire.model_hash = Some(ClipModel::hash_dir(&dir)?);
        }
        wire.model = ModelLocation::Local(dir);
    }
    if let Some(p) = &wire.save_state {
        path_text(p)?;
    }
    Ok(wire)
}

/// The options back from their wire form, with `resume` set to `resume` (where the shipped
/// state was written).
///
/// `reset = never` becomes `per_partition`: processes share no adapter, so on a cluster each
/// task adapts its own stream whatever was asked, and the plan says so.
pub fn options_from_wire(mut options: ClipTtaOptions, resume: Option<PathBuf>) -> Result<ClipTtaOptions> {
    if options.reset == Reset::Never {
        options.reset = Reset::PerPartition;
    }
    options.resume = resume;
    options.method_config().map_err(|e| Error::Plan(format!("cliptta plan: {e}")))?;
    Ok(options)
}

fn path_text(p: &Path) -> Result<String> {
    p.to_str().map(str::to_string).ok_or_else(|| Error::InvalidInput(format!("path {} is not UTF-8", p.display())))
}

/// The listing order as plain data.
pub fn order_to_wire(order: ListingOrder) -> Option<u64> {
    match order {
        ListingOrder::Shuffle(seed) => Some(seed),
        ListingOrder::Listing => None,
    }
}

/// [`order_to_wire`] reversed.
pub fn order_from_wire(seed: Option<u64>) -> ListingOrder {
    seed.map_or(ListingOrder::Listing, ListingOrder::Shuffle)
}

/// A location that means the same in every process: a relative local path is made absolute
/// against this process's working directory (URLs and absolute paths are kept as written).
pub fn absolute_location(original: &str) -> Result<String> {
    let has_scheme = original.contains("://");
    let path = Path::new(original);
    if has_scheme || path.is_absolute() {
        return Ok(original.to_string());
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    path_text(&cwd.join(path))
}

/// An adapter state as bytes: the two halves of an `Adapter::save_state` file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateBytes {
    /// The safetensors half (LayerNorms, Adam moments, threshold, optionally the memory).
    pub tensors: Vec<u8>,
    /// The JSON half (settings the state was made with, counters).
    pub info: Vec<u8>,
}

impl StateBytes {
    /// Reads the state saved at `path` (and its JSON beside it).
    pub fn read(path: &Path) -> Result<Self> {
        let info_path = crate::tta::info_path(path);
        let tensors = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let info = std::fs::read(&info_path).map_err(|e| Error::io(&info_path, e))?;
        Ok(Self { tensors, info })
    }

    /// Writes the state under `dir`, named by its content hash, and returns the safetensors
    /// path to resume from. Concurrent tasks in one process, and reruns, find the file there;
    /// each writes through a unique temporary name and renames, so none reads a partial file.
    pub fn materialise(&self, dir: &Path) -> Result<PathBuf> {
        let mut h = Sha256::new();
        h.update((self.tensors.len() as u64).to_le_bytes());
        h.update(&self.tensors);
        h.update(&self.info);
        let name = hex::encode(&h.finalize()[..16]);
        let path = dir.join(format!("{name}.safetensors"));
        let info_path = crate::tta::info_path(&path);
        if path.is_file() && info_path.is_file() {
            return Ok(path);
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
        let unique = format!("{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], "");
        for (bytes, target) in [(&self.info, &info_path), (&self.tensors, &path)] {
            let tmp = target.with_extension(format!("tmp-{unique}"));
            std::fs::write(&tmp, bytes).map_err(|e| Error::write(&tmp, e))?;
            std::fs::rename(&tmp, target).map_err(|e| Error::write(target, e))?;
        }
        Ok(path)
    }
}

/// Where shipped states are written on a receiving process.
pub fn state_dir() -> PathBuf {
    std::env::temp_dir().join("cliptta-cluster-state")
}

/// A payload: kind, settings and optional state.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// What the settings describe.
    pub kind: Kind,
    /// The settings, as JSON.
    pub json: Vec<u8>,
    /// The initial adapted state, if any.
    pub state: Option<StateBytes>,
}

impl Envelope {
    /// Appends the encoded envelope to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(MAGIC);
        buf.push(self.kind as u8);
        let empty = StateBytes::default();
        let state = self.state.as_ref().unwrap_or(&empty);
        buf.push(u8::from(self.state.is_some()));
        for section in [&self.json, &state.tensors, &state.info] {
            buf.extend_from_slice(&(section.len() as u64).to_le_bytes());
            buf.extend_from_slice(section);
        }
    }

    /// Whether `buf` is one of ours (starts with [`MAGIC`]).
    pub fn is_ours(buf: &[u8]) -> bool {
        buf.starts_with(MAGIC)
    }

    /// Decodes an envelope; a truncated or foreign buffer is an error saying so.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let bad = |what: &str| Error::Plan(format!("cliptta plan node: {what}"));
        let rest = buf.strip_prefix(MAGIC.as_slice()).ok_or_else(|| bad("not a cliptta payload (wrong magic)"))?;
        let (&kind, rest) = rest.split_first().ok_or_else(|| bad("truncated (no kind)"))?;
        let kind = Kind::from_byte(kind).ok_or_else(|| bad(&format!("unknown kind {kind} (made by a newer cliptta?)")))?;
        let (&has_state, mut rest) = rest.split_first().ok_or_else(|| bad("truncated (no state flag)"))?;
        let mut sections = Vec::with_capacity(3);
        for _ in 0..3 {
            let (len, tail) = rest.split_at_checked(8).ok_or_else(|| bad("truncated (section length)"))?;
            let mut le = [0u8; 8];
            le.copy_from_slice(len);
            let len = usize::try_from(u64::from_le_bytes(le)).map_err(|_| bad("section too long"))?;
            let (section, tail) = tail.split_at_checked(len).ok_or_else(|| bad("truncated (section)"))?;
            sections.push(section.to_vec());
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let info = sections.pop().unwrap_or_default();
        let tensors = sections.pop().unwrap_or_default();
        let json = sections.pop().unwrap_or_default();
        let state = (has_state == 1).then_some(StateBytes { tensors, info });
        Ok(Self { kind, json, state })
    }
}

/// Settings of a `cliptta(...)` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderConfig {
    /// The location, absolute ([`absolute_location`]).
    pub location: String,
    /// The options.
    pub options: ClipTtaOptions,
}

/// Where a `ClipTtaExec`'s images come from, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SourceConfig {
    /// A binary column of encoded images.
    Bytes {
        /// Its index.
        column: usize,
    },
    /// A column of object URLs in the store at `store_url` (rebuilt from the options' keys).
    Location {
        /// Index of the URL column.
        column: usize,
        /// Index of the size column.
        size_column: Option<usize>,
        /// The store's root URL.
        store_url: String,
    },
}

/// Settings of a `ClipTtaExec` (its input travels as its own plan node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecConfig {
    /// The options.
    pub options: ClipTtaOptions,
    /// The image source.
    pub source: SourceConfig,
    /// Whether the image column is dropped from the output.
    pub drop_image: bool,
}

/// Settings of an `ImageListingExec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListingConfig {
    /// The location, absolute.
    pub location: String,
    /// The shuffle seed, or `None` for path order.
    pub shuffle_seed: Option<u64>,
    /// What a directory or prefix lists.
    pub extensions: Extensions,
    /// The number of partitions the lake is split into (which of them a task lists comes
    /// from the node's input, its partition ids).
    pub partitions: usize,
    /// Object-store keys.
    pub store_options: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip")
    }

    #[test]
    fn options_round_trip_with_hash() {
        let mut o = ClipTtaOptions::new(vec!["cat".into(), "dog".into()], model_dir());
        o.reset = Reset::PerBatch;
        o.steps = Some(3);
        o.lr = Some(2e-4);
        o.partitions = 4;
        o.store_options = vec![("allow_http".into(), "true".into())];
        let wire = options_to_wire(&o).unwrap();
        let json = serde_json::to_vec(&wire).unwrap();
        let back: ClipTtaOptions = serde_json::from_slice(&json).unwrap();
        let back = options_from_wire(back, None).unwrap();
        let mut want = o.clone();
        want.model = model_dir().canonicalize().unwrap().into();
        want.model_hash = Some(ClipModel::hash_dir(&model_dir()).unwrap());
        assert_eq!(back, want);
    }

    #[test]
    fn remote_model_travels_as_its_url() {
        let o = ClipTtaOptions::new(vec!["cat".into()], ModelLocation::parse("s3://models/tiny-clip").unwrap());
        let back = options_from_wire(options_to_wire(&o).unwrap(), None).unwrap();
        assert_eq!(back.model, o.model);
        assert_eq!(back.model_hash, None);
    }

    #[test]
    fn never_becomes_per_partition() {
        let o = ClipTtaOptions::new(vec!["cat".into()], model_dir());
        assert_eq!(o.reset, Reset::Never);
        let back = options_from_wire(options_to_wire(&o).unwrap(), None).unwrap();
        assert_eq!(back.reset, Reset::PerPartition);
    }

    #[test]
    fn envelope_round_trip_and_errors() {
        let env = Envelope { kind: Kind::Exec, json: b"{}".to_vec(), state: Some(StateBytes { tensors: vec![1, 2, 3], info: b"{}".to_vec() }) };
        let mut buf = Vec::new();
        env.encode(&mut buf);
        assert!(Envelope::is_ours(&buf));
        assert_eq!(Envelope::decode(&buf).unwrap(), env);
        let plain = Envelope { state: None, ..env.clone() };
        let mut buf2 = Vec::new();
        plain.encode(&mut buf2);
        assert_eq!(Envelope::decode(&buf2).unwrap(), plain);
        let cases: [(&[u8], &str); 4] = [
            (b"nope", "wrong magic"),
            (&buf[..9], "no state flag"),
            (&buf[..buf.len() - 1], "truncated (section)"),
            (b"CLIPTTA\x01\x09\x00", "unknown kind 9"),
        ];
        for (bytes, needle) in cases {
            let err = Envelope::decode(bytes).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn state_is_materialised_once_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateBytes { tensors: vec![9; 10], info: b"{\"a\":1}".to_vec() };
        let a = s.materialise(dir.path()).unwrap();
        let b = s.materialise(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(StateBytes::read(&a).unwrap(), s);
    }

    #[test]
    fn relative_locations_become_absolute() {
        assert_eq!(absolute_location("s3://b/x/*.png").unwrap(), "s3://b/x/*.png");
        assert_eq!(absolute_location("/data/x").unwrap(), "/data/x");
        let rel = absolute_location("data/lake/*.png").unwrap();
        assert!(Path::new(&rel).is_absolute() && rel.ends_with("data/lake/*.png"), "{rel}");
    }
}
