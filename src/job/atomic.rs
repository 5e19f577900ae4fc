//! Writes that are whole or absent: a temporary file in the same directory, flushed to disk,
//! renamed over the target, and the directory flushed so the rename survives a power cut.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = File::create(&tmp).map_err(|e| Error::write(&tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::write(&tmp, e))?;
    file.sync_all().map_err(|e| Error::write(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| Error::write(path, e))?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Flushes a directory's entries (renames, new files) to disk.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }).map_err(|e| Error::io(dir, e))?;
    d.sync_all().map_err(|e| Error::write(dir, e))
}

/// Flushes an existing file's content to disk.
pub(crate) fn fsync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::write(path, e))
}
