//! `ClipTtaStream`: one partition's adapting stream.
//!
//! Input record batches are cut into chunks of at most `adapt_batch_size` rows. For each chunk
//! the images are fetched (async, at most `concurrency` in flight) and decoded + preprocessed
//! (blocking pool); rows that fail get a status and error and never reach the adapter. Decoded
//! images accumulate until a full adaptation batch of `adapt_batch_size` images is ready, which
//! `Adapter::adapt_and_predict` processes on a blocking thread; the adapter's state lives on
//! across batches (unless `reset = per_batch`). A chunk is emitted, in input order and with
//! every one of its rows, as soon as all its images have predictions. At most about two
//! adaptation batches of preprocessed images are held at once.

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::common::{internal_datafusion_err, DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::metrics::RecordOutput;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::adapters::{partition_adapter, SharedAdapter};
use super::image_source::ImageSource;
use super::loader::Loader;
use super::metrics::ClipTtaMetrics;
use super::options::ClipTtaOptions;
use super::refetch;
use super::reorder::{ReorderBuffer, RowKey, RowOutcome, WaitingChunk};
use super::schema::{PredictionBuilder, PredictionColumn};
use crate::image::to_tensor;
use crate::job::{read_batches, to_record_batch, BatchRecord, Checkpoint};
use crate::tta::BatchPrediction;
use crate::RowStatus;

/// Where a scan's partitions put their diagnostics rows ([`crate::job::batches_schema`]).
pub type DiagnosticsSink = Arc<std::sync::Mutex<Vec<RecordBatch>>>;

/// A preprocessed image waiting for its adaptation batch.
struct PendingImage {
    key: RowKey,
    pixels: Vec<f32>,
}

/// What a partition needs once its adapter exists.
struct Running {
    adapter: SharedAdapter,
    loader: Loader,
    crop: usize,
}

/// The per-partition state of a `ClipTtaExec` (see the module docs).
pub struct ClipTtaStream {
    input: SendableRecordBatchStream,
    schema: SchemaRef,
    options: Arc<ClipTtaOptions>,
    source: ImageSource,
    drop_column: Option<usize>,
    columns: Vec<PredictionColumn>,
    metrics: ClipTtaMetrics,
    shared: Arc<OnceCell<SharedAdapter>>,
    model_store: Option<Arc<dyn ObjectStore>>,
    running: Option<Running>,
    current: Option<(RecordBatch, usize)>,
    reorder: ReorderBuffer,
    images: Vec<PendingImage>,
    ready: VecDeque<RecordBatch>,
    finished: bool,
    partition: usize,
    job: Option<Job>,
    diagnostics: DiagnosticsSink,
    /// Adaptation batches of this partition so far (with a checkpoint, earlier runs' included).
    batch_index: u64,
}

/// A checkpointed partition's progress (with `checkpoint_dir`).
struct Job {
    checkpoint: Checkpoint,
    /// Output rows since the last commit.
    uncommitted: Vec<RecordBatch>,
    /// Diagnostics rows since the last commit.
    uncommitted_batches: Vec<RecordBatch>,
    /// Output rows so far, committed or not: the input position.
    emitted: u64,
    /// Input rows still to skip (committed before this run).
    skip: u64,
    /// The checkpoint's digest of the rows it holds, checked when skipping ends.
    resumed_digest: Option<String>,
    /// The digest of the input rows so far (skipped, then emitted).
    digest: Sha256,
    /// Adaptation batches so far, including those before a resume.
    adapt_batches: u64,
    /// The checkpoint was complete when this run opened it.
    was_complete: bool,
}

impl ClipTtaStream {
    /// A stream over `input`. `shared` holds the adapter shared by partitions (ignored with
    /// `reset = per_partition`); `drop_column` removes the image column from the output.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: SendableRecordBatchStream,
        schema: SchemaRef,
        options: Arc<ClipTtaOptions>,
        source: ImageSource,
        drop_column: Option<usize>,
        embedding_dim: Option<i32>,
        metrics: ClipTtaMetrics,
        shared: Arc<OnceCell<SharedAdapter>>,
    ) -> Self {
        let columns = PredictionColumn::for_options(&options, embedding_dim);
        Self {
            input,
            schema,
            options,
            source,
            drop_column,
            columns,
            metrics,
            shared,
            model_store: None,
            running: None,
            current: None,
            reorder: ReorderBuffer::default(),
            images: Vec::new(),
            ready: VecDeque::new(),
            finished: false,
            partition: 0,
            job: None,
            diagnostics: Arc::default(),
            batch_index: 0,
        }
    }

    /// Puts each adaptation batch's diagnostics row in `sink` (shared by the scan's partitions).
    pub fn with_diagnostics(mut self, sink: DiagnosticsSink) -> Self {
        self.diagnostics = sink;
        self
    }

    /// The partition this stream is (names its checkpoint files).
    pub fn with_partition(mut self, partition: usize) -> Self {
        self.partition = partition;
        self
    }

    /// Reads a remote model through `store` (the session's store for the model URL) instead of
    /// one built from the environment.
    pub fn with_model_store(mut self, store: Option<Arc<dyn ObjectStore>>) -> Self {
        self.model_store = store;
        self
    }

    /// The stream as a DataFusion record batch stream.
    pub fn into_stream(self) -> SendableRecordBatchStream {
        let schema = self.schema.clone();
        let stream = futures::stream::try_unfold(self, |mut s| async move {
            match s.next_batch().await? {
                Some(batch) => Ok(Some((batch, s))),
                None => Ok(None),
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }

    async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Ok(Some(batch.record_output(&self.metrics.baseline)));
            }
            if self.finished {
                self.metrics.baseline.done();
                return Ok(None);
            }
            self.ensure_running().await?;
            match self.next_chunk().await? {
                Some(chunk) => self.process_chunk(chunk).await?,
                None => {
                    while !self.images.is_empty() {
                        let n = self.images.len().min(self.options.adapt_batch_size);
                        let images: Vec<_> = self.images.drain(..n).collect();
                        self.adapt(images).await?;
                    }
                    self.emit_completed()?;
                    if !self.reorder.is_empty() {
                        return Err(internal_datafusion_err!("ClipTtaStream ended with {} unfinished chunks", self.reorder.len()));
                    }
                    self.commit(true).await?;
                    self.save_state().await?;
                    self.finished = true;
                }
            }
        }
    }

    async fn ensure_running(&mut self) -> Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let start = Instant::now();
        let (adapter, preprocessor) = partition_adapter(&self.options, &self.shared, self.model_store.clone()).await?;
        let loader = Loader {
            source: self.source.clone(),
            fetch: self.options.fetch_options(),
            concurrency: self.options.concurrency,
            limits: self.options.limits(),
            preprocessor: Arc::new(preprocessor.clone()),
            fetch_time: self.metrics.fetch_time.clone(),
            decode_time: self.metrics.decode_time.clone(),
            preprocess_time: self.metrics.preprocess_time.clone(),
        };
        self.running = Some(Running { adapter, loader, crop: preprocessor.crop_size });
        self.open_checkpoint().await?;
        self.metrics.load_time.add_elapsed(start);
        Ok(())
    }

    /// With `checkpoint_dir`: replays the committed rows, restores the adapter to the last
    /// commit and skips the input rows already done.
    async fn open_checkpoint(&mut self) -> Result<()> {
        let (Some(dir), Some(running)) = (self.options.checkpoint_dir.clone(), self.running.as_ref()) else {
            return Ok(());
        };
        let adapter = running.adapter.clone();
        let mut fingerprint = self.options.job_fingerprint();
        let (schema, partition) = (self.schema.clone(), self.partition);
        let (checkpoint, replay) = tokio::task::spawn_blocking(move || -> crate::Result<_> {
            let mut adapter = adapter.lock().unwrap_or_else(PoisonError::into_inner);
            fingerprint.insert("model_hash".into(), adapter.model().content_hash().to_string());
            let (checkpoint, resume) = Checkpoint::open(&dir, partition, fingerprint, schema)?;
            if let Some(state) = &resume.state {
                adapter.load_state(state)?;
            }
            let mut replay = Vec::new();
            for part in &resume.parts {
                replay.push(checkpoint.read_part(part)?);
            }
            let mut batches = Vec::new();
            for file in &resume.batches {
                batches.extend(read_batches(file)?);
            }
            Ok((checkpoint, (replay, batches, resume)))
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
        let (parts, batches, resume) = replay;
        self.metrics.rows_resumed.add(resume.rows as usize);
        self.diagnostics.lock().unwrap_or_else(PoisonError::into_inner).extend(batches);
        self.batch_index = resume.adapt_batches;
        let mut job = Job {
            checkpoint,
            uncommitted: Vec::new(),
            uncommitted_batches: Vec::new(),
            emitted: resume.rows,
            skip: resume.position,
            resumed_digest: resume.input_digest,
            digest: Sha256::new(),
            adapt_batches: resume.adapt_batches,
            was_complete: resume.complete,
        };
        for (index, mut batches) in parts.into_iter().enumerate() {
            if self.refetch_part(&mut batches).await? {
                let (checkpoint, replaced) = (job.checkpoint, batches.clone());
                job.checkpoint = tokio::task::spawn_blocking(move || -> crate::Result<Checkpoint> {
                    let mut checkpoint = checkpoint;
                    checkpoint.replace_part(index, &replaced)?;
                    Ok(checkpoint)
                })
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))??;
            }
            self.ready.extend(batches);
        }
        self.job = Some(job);
        Ok(())
    }

    /// Fetches a committed part's `fetch_error` rows again (lake scans only: a table's bytes
    /// are never fetched) and puts each back in its place, labelled by the restored adapter
    /// without adapting. Returns whether any row was redone.
    async fn refetch_part(&mut self, batches: &mut [RecordBatch]) -> Result<bool> {
        let (ImageSource::Location { .. }, Some(running)) = (&self.source, self.running.as_ref()) else {
            return Ok(false);
        };
        let input_columns = self.input.schema().fields().len();
        let mut changed = false;
        for batch in batches.iter_mut() {
            let rows = refetch::fetch_error_rows(batch);
            if rows.is_empty() {
                continue;
            }
            let chunk = refetch::input_rows(batch, input_columns, &rows)?;
            let loaded = running.loader.load(&chunk).await?;
            let pixels: Vec<Vec<f32>> = loaded.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
            let prediction = if pixels.is_empty() {
                BatchPrediction::default()
            } else {
                let (adapter, crop) = (running.adapter.clone(), running.crop);
                tokio::task::spawn_blocking(move || {
                    let adapter = adapter.lock().unwrap_or_else(PoisonError::into_inner);
                    let tensor = to_tensor(&pixels, crop, adapter.model().device())?;
                    adapter.predict(&tensor)
                })
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))??
            };
            let mut builder = PredictionBuilder::new(self.columns.clone(), &self.options.classes, chunk.num_rows());
            // The predictions are the loaded rows', in row order.
            let mut predicted = 0;
            for result in &loaded {
                match result {
                    Ok(_) => {
                        builder.append_predicted(&prediction, predicted);
                        predicted += 1;
                    }
                    Err(failure) => builder.append_failed(failure.status, &failure.message),
                }
            }
            let mut columns = chunk.columns().to_vec();
            columns.extend(builder.finish());
            let redone = RecordBatch::try_new(self.schema.clone(), columns)?;
            *batch = refetch::put_back(batch, &redone, &rows)?;
            self.metrics.rows_refetched.add(rows.len());
            changed = true;
        }
        Ok(changed)
    }

    /// Commits every decided row and the adapter state (`last`: the input has ended).
    async fn commit(&mut self, last: bool) -> Result<()> {
        if self.job.is_none() {
            return Ok(());
        }
        while let Some(chunk) = self.reorder.pop_decided_prefix() {
            self.absorb(&chunk);
            let batch = self.build_output(chunk)?;
            self.push_output(batch);
        }
        let (Some(mut job), Some(running)) = (self.job.take(), self.running.as_ref()) else {
            return Ok(());
        };
        if job.was_complete && job.uncommitted.is_empty() {
            // A finished job run again: everything came from the checkpoint.
            self.job = Some(job);
            return Ok(());
        }
        let adapter = running.adapter.clone();
        let batches = std::mem::take(&mut job.uncommitted);
        let diagnostics = std::mem::take(&mut job.uncommitted_batches);
        let _timer = self.metrics.commit_time.timer();
        let job = tokio::task::spawn_blocking(move || -> crate::Result<Job> {
            let adapter = adapter.lock().unwrap_or_else(PoisonError::into_inner);
            let digest = hex::encode(job.digest.clone().finalize());
            job.checkpoint.commit(&batches, &diagnostics, Some(&adapter), job.emitted, Some(digest), job.adapt_batches, last)?;
            Ok(job)
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
        self.metrics.commits.add(1);
        self.job = Some(job);
        Ok(())
    }

    fn push_output(&mut self, batch: RecordBatch) {
        if let Some(job) = &mut self.job {
            job.emitted += batch.num_rows() as u64;
            job.uncommitted.push(batch.clone());
        }
        self.ready.push_back(batch);
    }

    async fn next_chunk(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some((batch, offset)) = &mut self.current {
                if *offset < batch.num_rows() {
                    let len = (batch.num_rows() - *offset).min(self.options.adapt_batch_size);
                    let chunk = batch.slice(*offset, len);
                    *offset += len;
                    return Ok(Some(chunk));
                }
                self.current = None;
            }
            match self.input.next().await {
                Some(batch) => {
                    let batch = batch?;
                    // Rows a checkpoint already holds.
                    let skip = match self.job.as_mut() {
                        Some(job) if job.skip > 0 => {
                            let n = job.skip.min(batch.num_rows() as u64);
                            job.skip -= n;
                            absorb(&mut job.digest, &self.source, &batch, 0..n as usize);
                            if job.skip == 0 {
                                check_resumed_rows(job)?;
                            }
                            n as usize
                        }
                        _ => 0,
                    };
                    self.current = Some((batch, skip));
                }
                None => {
                    if let Some(job) = self.job.as_ref().filter(|j| j.skip > 0) {
                        return Err(DataFusionError::External(Box::new(crate::Error::CheckpointMismatch {
                            dir: job.checkpoint.dir().to_path_buf(),
                            differences: vec![format!("the input ended {} rows before the checkpoint's position (was the lake modified?)", job.skip)],
                        })));
                    }
                    return Ok(None);
                }
            }
        }
    }

    async fn process_chunk(&mut self, chunk: RecordBatch) -> Result<()> {
        let running = self.running.as_ref().ok_or_else(|| internal_datafusion_err!("ClipTtaStream has no adapter"))?;
        let loaded = running.loader.load(&chunk).await?;
        let mut outcomes = Vec::with_capacity(loaded.len());
        let mut pixels = Vec::new();
        for (row, result) in loaded.into_iter().enumerate() {
            match result {
                Ok(p) => {
                    pixels.push((row, p));
                    outcomes.push(RowOutcome::Waiting);
                }
                Err(failure) => {
                    self.metrics.record(failure.status);
                    outcomes.push(RowOutcome::Failed(failure));
                }
            }
        }
        let seq = self.reorder.push(chunk, outcomes);
        self.images.extend(pixels.into_iter().map(|(row, pixels)| PendingImage { key: RowKey { chunk: seq, row }, pixels }));
        while self.images.len() >= self.options.adapt_batch_size {
            let images: Vec<_> = self.images.drain(..self.options.adapt_batch_size).collect();
            self.adapt(images).await?;
        }
        self.emit_completed()
    }

    async fn adapt(&mut self, images: Vec<PendingImage>) -> Result<()> {
        let running = self.running.as_ref().ok_or_else(|| internal_datafusion_err!("ClipTtaStream has no adapter"))?;
        let (adapter, crop) = (running.adapter.clone(), running.crop);
        let timer = self.metrics.adapt_time.clone();
        let (keys, pixels): (Vec<RowKey>, Vec<Vec<f32>>) = images.into_iter().map(|i| (i.key, i.pixels)).unzip();
        let prediction: BatchPrediction = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let mut adapter = adapter.lock().unwrap_or_else(PoisonError::into_inner);
            let tensor = to_tensor(&pixels, crop, adapter.model().device())?;
            let out = adapter.adapt_and_predict(&tensor);
            timer.add_elapsed(start);
            out
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
        self.metrics.adapt_batches.add(1);
        if prediction.len() != keys.len() {
            return Err(internal_datafusion_err!("adapter returned {} predictions for {} images", prediction.len(), keys.len()));
        }
        self.record_diagnostics(&prediction)?;
        let prediction = Arc::new(prediction);
        for (index, key) in keys.into_iter().enumerate() {
            self.reorder.predicted(key, &prediction, index)?;
        }
        let every = self.options.checkpoint_every.max(1) as u64;
        let due = self.job.as_mut().is_some_and(|job| {
            job.adapt_batches += 1;
            job.adapt_batches % every == 0
        });
        if due {
            self.commit(false).await?;
        }
        Ok(())
    }

    /// The batch's diagnostics row: into the scan's sink, and the checkpoint's next commit.
    fn record_diagnostics(&mut self, prediction: &BatchPrediction) -> Result<()> {
        let Some(diagnostics) = prediction.diagnostics.clone() else {
            return Ok(());
        };
        self.metrics.adaptation.add(&diagnostics, prediction.guard.as_ref());
        let record = BatchRecord { partition: self.partition, batch: self.batch_index, diagnostics, guard: prediction.guard.clone() };
        self.batch_index += 1;
        let row = to_record_batch(&[record])?;
        if let Some(job) = &mut self.job {
            job.uncommitted_batches.push(row.clone());
        }
        self.diagnostics.lock().unwrap_or_else(PoisonError::into_inner).push(row);
        Ok(())
    }

    fn emit_completed(&mut self) -> Result<()> {
        while let Some(chunk) = self.reorder.pop_complete() {
            self.absorb(&chunk);
            let batch = self.build_output(chunk)?;
            self.push_output(batch);
        }
        Ok(())
    }

    /// Adds a chunk's input rows to a checkpoint's input digest.
    fn absorb(&mut self, chunk: &WaitingChunk) {
        if let Some(job) = &mut self.job {
            absorb(&mut job.digest, &self.source, &chunk.batch, 0..chunk.batch.num_rows());
        }
    }

    fn build_output(&self, chunk: WaitingChunk) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = chunk
            .batch
            .columns()
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.drop_column)
            .map(|(_, c)| c.clone())
            .collect();
        let mut builder = PredictionBuilder::new(self.columns.clone(), &self.options.classes, chunk.batch.num_rows());
        for outcome in &chunk.outcomes {
            match outcome {
                RowOutcome::Predicted(batch, index) => {
                    builder.append_predicted(batch, *index);
                    self.metrics.record(RowStatus::Ok);
                }
                RowOutcome::Failed(failure) => builder.append_failed(failure.status, &failure.message),
                RowOutcome::Waiting => return Err(internal_datafusion_err!("a chunk left the reorder buffer with a waiting row")),
            }
        }
        columns.extend(builder.finish());
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    async fn save_state(&mut self) -> Result<()> {
        let (Some(path), Some(running)) = (self.options.save_state.clone(), self.running.as_ref()) else {
            return Ok(());
        };
        let adapter = running.adapter.clone();
        tokio::task::spawn_blocking(move || adapter.lock().unwrap_or_else(PoisonError::into_inner).save_state(&path))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        Ok(())
    }
}

/// Adds the identities of `batch`'s rows `rows` ([`ImageSource::row_identity`]) to `digest`.
fn absorb(digest: &mut Sha256, source: &ImageSource, batch: &RecordBatch, rows: std::ops::Range<usize>) {
    for row in rows {
        digest.update(source.row_identity(batch, row).unwrap_or_default().as_bytes());
        digest.update(b"\n");
    }
}

/// After skipping a checkpoint's rows: they must be the rows it committed, or the input
/// changed under it.
fn check_resumed_rows(job: &Job) -> Result<()> {
    let Some(want) = job.resumed_digest.as_deref() else {
        return Ok(());
    };
    if hex::encode(job.digest.clone().finalize()) == want {
        return Ok(());
    }
    Err(DataFusionError::External(Box::new(crate::Error::CheckpointMismatch {
        dir: job.checkpoint.dir().to_path_buf(),
        differences: vec![format!(
            "the first {} input rows are not the ones it committed (was the lake modified?)",
            job.checkpoint.position()
        )],
    })))
}
