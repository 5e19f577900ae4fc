//! [`Checkpoint`]: one partition's commits in a checkpoint directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::atomic::{fsync_dir, fsync_file, write_atomically};
use super::batches::{read_batches, row_count, write_batches};
use super::manifest::{Commit, Manifest, MANIFEST_VERSION};
use crate::error::{Error, Result};
use crate::tta::{info_path, Adapter};

/// What a partition continues from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resume {
    /// Committed part files, oldest first: their rows are the partition's first output rows.
    pub parts: Vec<PathBuf>,
    /// The adapter state after the last commit.
    pub state: Option<PathBuf>,
    /// Input rows done: the input continues after this many rows.
    pub position: u64,
    /// Rows committed.
    pub rows: u64,
    /// Adaptation batches run before the last commit.
    pub adapt_batches: u64,
    /// Commits found.
    pub commits: usize,
    /// Whether the partition was already complete.
    pub complete: bool,
    /// The digest of the first `position` input rows ([`Commit::input_digest`]).
    pub input_digest: Option<String>,
    /// Committed diagnostics files, oldest first (`batches-p{p}-{seq}.parquet`).
    pub batches: Vec<PathBuf>,
}

/// One partition's checkpoint: reads what was committed, commits more.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    manifest: Manifest,
    schema: SchemaRef,
}

fn name(kind: &str, partition: usize, seq: Option<u64>, ext: &str) -> String {
    match seq {
        Some(seq) => format!("{kind}-p{partition:03}-{seq:05}.{ext}"),
        None => format!("{kind}-p{partition:03}.{ext}"),
    }
}

impl Checkpoint {
    /// Opens (or starts) partition `partition`'s checkpoint in `dir`. A manifest made with other
    /// settings (`fingerprint`) is refused, naming each difference.
    pub fn open(dir: &Path, partition: usize, fingerprint: BTreeMap<String, String>, schema: SchemaRef) -> Result<(Self, Resume)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
        let manifest_path = dir.join(name("manifest", partition, None, "json"));
        let manifest = match Manifest::read(&manifest_path)? {
            Some(m) => {
                let differences = m.differences(&fingerprint);
                if !differences.is_empty() {
                    return Err(Error::CheckpointMismatch { dir: dir.to_path_buf(), differences });
                }
                m
            }
            None => Manifest { version: MANIFEST_VERSION, partition, fingerprint, commits: Vec::new(), complete: false },
        };
        let resume = Resume {
            parts: manifest.commits.iter().map(|c| dir.join(&c.part)).collect(),
            state: manifest.commits.last().and_then(|c| c.state.as_ref()).map(|s| dir.join(s)),
            position: manifest.position(),
            rows: manifest.rows(),
            adapt_batches: manifest.commits.last().map_or(0, |c| c.adapt_batches),
            commits: manifest.commits.len(),
            complete: manifest.complete,
            input_digest: manifest.commits.last().and_then(|c| c.input_digest.clone()),
            batches: manifest.commits.iter().filter_map(|c| c.batches.as_ref()).map(|b| dir.join(b)).collect(),
        };
        let checkpoint = Self { dir: dir.to_path_buf(), manifest, schema };
        checkpoint.remove_uncommitted()?;
        Ok((checkpoint, resume))
    }

    /// Files of this partition that no commit names (a run killed while committing).
    fn remove_uncommitted(&self) -> Result<()> {
        let p = self.manifest.partition;
        let mut keep: Vec<String> = Vec::new();
        for c in &self.manifest.commits {
            keep.push(c.part.clone());
            keep.extend(c.batches.clone());
        }
        if let Some(state) = self.manifest.commits.last().and_then(|c| c.state.clone()) {
            keep.push(info_path(Path::new(&state)).display().to_string());
            keep.push(state);
        }
        let prefixes = [format!("part-p{p:03}-"), format!("state-p{p:03}-"), format!("batches-p{p:03}-"), format!("manifest-p{p:03}.json.tmp")];
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if prefixes.iter().any(|pre| file.starts_with(pre.as_str())) && !keep.contains(&file) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|e| Error::write(&path, e))?;
            }
        }
        Ok(())
    }

    /// The rows of a committed part file, in order.
    pub fn read_part(&self, path: &Path) -> Result<Vec<RecordBatch>> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let parquet = |e: parquet::errors::ParquetError| Error::Config { path: path.to_path_buf(), message: format!("cannot read checkpoint part: {e}") };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet)?.build().map_err(parquet)?;
        let mut batches = Vec::new();
        for batch in reader {
            let batch = batch?;
            // The part was written with the output schema; re-wrap so field metadata matches.
            batches.push(RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())?);
        }
        Ok(batches)
    }

    /// Commits `batches` (the rows since the last commit, possibly none) with the adapter state
    /// after them and the diagnostics of the adaptation batches since the last commit;
    /// `position` is the input rows done (with their `input_digest`), `complete` whether the
    /// input ended.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &mut self,
        batches: &[RecordBatch],
        diagnostics: &[RecordBatch],
        adapter: Option<&Adapter>,
        position: u64,
        input_digest: Option<String>,
        adapt_batches: u64,
        complete: bool,
    ) -> Result<Commit> {
        let p = self.manifest.partition;
        let seq = self.manifest.commits.last().map_or(0, |c| c.seq + 1);
        let part = name("part", p, Some(seq), "parquet");
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        self.write_part(&part, seq, batches)?;

        let state = match adapter {
            Some(adapter) => {
                let file = name("state", p, Some(seq), "safetensors");
                let path = self.dir.join(&file);
                adapter.save_state(&path)?;
                fsync_file(&path)?;
                fsync_file(&info_path(&path))?;
                fsync_dir(&self.dir)?;
                Some(file)
            }
            None => None,
        };
        let diagnostics_file = if row_count(diagnostics) > 0 {
            let file = name("batches", p, Some(seq), "parquet");
            write_batches(&self.dir.join(&file), diagnostics)?;
            Some(file)
        } else {
            None
        };
        let previous_state = self.manifest.commits.last().and_then(|c| c.state.clone());
        let commit = Commit { seq, part, rows: rows as u64, position, adapt_batches, state, input_digest, batches: diagnostics_file };
        self.manifest.commits.push(commit.clone());
        self.manifest.complete = complete;
        self.manifest.write(&self.dir.join(name("manifest", p, None, "json")))?;
        // Only the latest state is needed to continue.
        if let Some(old) = previous_state {
            let old = self.dir.join(old);
            let _ = std::fs::remove_file(info_path(&old));
            let _ = std::fs::remove_file(old);
        }
        Ok(commit)
    }

    /// Writes `batches` as part file `part` of commit `seq` (temp + fsync + rename), with the
    /// job's fingerprint in its key/value metadata.
    fn write_part(&self, part: &str, seq: u64, batches: &[RecordBatch]) -> Result<()> {
        let p = self.manifest.partition;
        let mut metadata: Vec<KeyValue> =
            self.manifest.fingerprint.iter().map(|(k, v)| KeyValue::new(format!("cliptta.{k}"), v.clone())).collect();
        metadata.push(KeyValue::new("cliptta.commit".to_string(), seq.to_string()));
        metadata.push(KeyValue::new("cliptta.partition".to_string(), p.to_string()));
        let props = WriterProperties::builder().set_key_value_metadata(Some(metadata)).build();
        let failed = |e: parquet::errors::ParquetError| Error::Config { path: self.dir.join(part), message: format!("cannot write checkpoint part: {e}") };
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, self.schema.clone(), Some(props)).map_err(failed)?;
        for batch in batches {
            writer.write(batch).map_err(failed)?;
        }
        writer.close().map_err(failed)?;
        write_atomically(&self.dir.join(part), &bytes)
    }

    /// Replaces the rows of commit `index`'s part file with `batches` (the same rows, some of
    /// them recomputed): a new part file, then the manifest pointing at it, then the old file
    /// removed, so a kill at any point leaves one complete version.
    pub fn replace_part(&mut self, index: usize, batches: &[RecordBatch]) -> Result<()> {
        let Some(commit) = self.manifest.commits.get(index).cloned() else {
            return Err(Error::Internal(format!("no commit {index} to replace")));
        };
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows as u64 != commit.rows {
            return Err(Error::Internal(format!("replacing {} rows of commit {} with {rows}", commit.rows, commit.seq)));
        }
        let stem = commit.part.trim_end_matches(".parquet");
        let (base, revision) = match stem.rsplit_once("-r").and_then(|(b, r)| r.parse::<u32>().ok().map(|r| (b, r))) {
            Some((base, r)) => (base.to_string(), r + 1),
            None => (stem.to_string(), 1),
        };
        let part = format!("{base}-r{revision}.parquet");
        self.write_part(&part, commit.seq, batches)?;
        self.manifest.commits[index].part = part;
        self.manifest.write(&self.dir.join(name("manifest", self.manifest.partition, None, "json")))?;
        let _ = std::fs::remove_file(self.dir.join(&commit.part));
        Ok(())
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Input rows done by the commits so far.
    pub fn position(&self) -> u64 {
        self.manifest.position()
    }

    /// Commits so far.
    pub fn commits(&self) -> usize {
        self.manifest.commits.len()
    }
}

/// Every partition's committed diagnostics in checkpoint directory `dir`, partition by partition
/// in commit order (what `cliptta_batches(dir)` returns). A directory without manifests is an error.
pub fn checkpoint_batches(dir: &Path) -> Result<Vec<RecordBatch>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut manifests: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("manifest-p") && n.ends_with(".json")))
        .collect();
    if manifests.is_empty() {
        return Err(Error::config(dir, "is not a checkpoint directory (no manifest-p*.json)".to_string()));
    }
    manifests.sort();
    let mut out = Vec::new();
    for path in manifests {
        let Some(manifest) = Manifest::read(&path)? else { continue };
        for file in manifest.commits.iter().filter_map(|c| c.batches.as_ref()) {
            out.extend(read_batches(&dir.join(file))?);
        }
    }
    Ok(out)
}
