//! Directories compiled into the binary (the default model, the demo lake), written out once
//! into the local cache so that they are read like any other directory.

use std::path::{Path, PathBuf};

use include_dir::Dir;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Every file of `dir` with its path relative to `dir`, in a fixed order.
fn files<'a>(dir: &'a Dir<'a>, out: &mut Vec<(&'a Path, &'a [u8])>) {
    for f in dir.files() {
        out.push((f.path(), f.contents()));
    }
    for d in dir.dirs() {
        files(d, out);
    }
}

/// A short hash of the names and bytes of `dir`'s files: the copy's directory name, so a build
/// with other content never reads a stale copy.
pub fn content_id(dir: &Dir<'_>) -> String {
    let mut all = Vec::new();
    files(dir, &mut all);
    all.sort();
    let mut h = Sha256::new();
    for (path, bytes) in all {
        h.update(path.to_string_lossy().as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex::encode(&h.finalize()[..8])
}

/// Writes `dir` to `<root>/<name>-<id>/` unless a complete copy is there, and returns that path.
///
/// Safe to call from several threads and processes at once: each writes a private temporary
/// directory and renames it into place, and a loser of that race uses the winner's copy.
pub fn materialise(dir: &Dir<'_>, root: &Path, name: &str, id: &str) -> Result<PathBuf> {
    let mut all = Vec::new();
    files(dir, &mut all);
    let target = root.join(format!("{name}-{id}"));
    let complete = |d: &Path| all.iter().all(|(p, b)| std::fs::metadata(d.join(p)).is_ok_and(|m| m.len() == b.len() as u64));
    if complete(&target) {
        return Ok(target);
    }
    std::fs::create_dir_all(root).map_err(|e| Error::write(root, e))?;
    let tmp = root.join(format!(".{name}-{id}-{}-{:?}", std::process::id(), std::thread::current().id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let written = all.iter().try_for_each(|(p, bytes)| {
        let path = tmp.join(p);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::write(parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| Error::write(&path, e))
    });
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, &target) {
        Ok(()) => Ok(target),
        // Another thread or process renamed its copy first: it has the same content.
        Err(_) if complete(&target) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(target)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(Error::write(&target, e))
        }
    }
}
