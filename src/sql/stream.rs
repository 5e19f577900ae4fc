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
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, FixedSizeListBuilder, Float32Builder, Int32Builder, ListBuilder, RecordBatch,
    StringBuilder,
};
use arrow::datatypes::{DataType, Field, SchemaRef};
use bytes::Bytes;
use datafusion::common::{exec_err, internal_datafusion_err, DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, RecordOutput, Time};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use object_store::path::Path;
use object_store::ObjectStore;
use tokio::sync::OnceCell;

use super::metrics::ClipTtaMetrics;
use super::options::{ClipTtaOptions, Reset};
use super::schema::{embedding_dim, output_schema, prediction_fields, STATUS_NULL, STATUS_OK};
use crate::image::{decode, preprocess, to_tensor, DecodeLimits};
use crate::model::{load_cached, LoadOptions, PreprocessorConfig};
use crate::source::{build_store, cache_root, fetch, fetch_model, store_options_for, FetchOptions, ModelLocation};
use crate::tta::{Adapter, BatchPrediction};

/// An adapter shared by the partitions of one scan (`reset = never`).
pub type SharedAdapter = Arc<Mutex<Adapter>>;

/// Where a row's image comes from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// A binary column (Binary, LargeBinary or BinaryView) holding encoded images.
    Bytes {
        /// Column index in the input.
        column: usize,
    },
    /// A Utf8 column of object URLs in `store`, with an optional Int64 size column used to
    /// refuse objects over `max_bytes` before fetching them.
    Location {
        /// Column index of the URLs.
        column: usize,
        /// Column index of the sizes.
        size_column: Option<usize>,
        /// The store the URLs point into.
        store: Arc<dyn ObjectStore>,
        /// The store's root URL (`s3://bucket/`), stripped from URLs to get object paths.
        store_url: String,
    },
}

/// The local directory of the options' model: the directory itself, or, for a URL, its
/// cache directory after bringing the files up to date (`store`: the model's store as the
/// session resolved it; built from the environment when `None`).
pub async fn model_dir(options: &ClipTtaOptions, store: Option<&Arc<dyn ObjectStore>>) -> crate::Result<PathBuf> {
    match &options.model {
        ModelLocation::Local(dir) => Ok(dir.clone()),
        ModelLocation::Remote(location) => {
            let store = match store {
                Some(store) => store.clone(),
                None => build_store(location.store_url(), &store_options_for(location.store_url(), &options.store_options))?,
            };
            fetch_model(&store, location, &cache_root(), None).await
        }
    }
}

/// Builds the adapter the options describe from the model in `model_dir` (see [`model_dir`])
/// (blocking: loads or reuses the model, encodes the class prompts, restores `resume`).
pub fn build_adapter(options: &ClipTtaOptions, model_dir: &std::path::Path) -> crate::Result<Adapter> {
    let load = LoadOptions { device: options.device, ..LoadOptions::default() };
    let model = load_cached(model_dir, &load)?;
    if let Some(expected) = &options.model_hash {
        if model.content_hash() != expected {
            return Err(crate::Error::config(
                model_dir,
                format!("model content hash {} differs from the planned model's {expected}: every node must hold the same checkpoint", model.content_hash()),
            ));
        }
    }
    let method = options.method_config().map_err(crate::Error::InvalidInput)?;
    let mut adapter = Adapter::new(model, &options.classes, &options.templates, method)?;
    if let Some(path) = &options.resume {
        adapter.load_state(path)?;
    }
    Ok(adapter)
}

struct RowPrediction {
    label: u32,
    confidence: f32,
    ood_score: f32,
    is_ood: bool,
    probs: Option<Vec<f32>>,
    embedding: Option<Vec<f32>>,
}

struct PendingChunk {
    batch: RecordBatch,
    failures: Vec<Option<(&'static str, String)>>,
    predictions: Vec<Option<RowPrediction>>,
    waiting: usize,
}

enum Job {
    Failed(&'static str, String),
    Array(ArrayRef, usize),
    Fetch { path: Path, url: String },
}

/// The per-partition state of a `ClipTtaExec` (see the module docs).
pub struct ClipTtaStream {
    input: SendableRecordBatchStream,
    schema: SchemaRef,
    options: Arc<ClipTtaOptions>,
    source: ImageSource,
    drop_column: Option<usize>,
    embedding_dim: Option<i32>,
    metrics: ClipTtaMetrics,
    cell: Arc<OnceCell<SharedAdapter>>,
    model_store: Option<Arc<dyn ObjectStore>>,
    adapter: Option<SharedAdapter>,
    preprocessor: Arc<PreprocessorConfig>,
    crop: usize,
    current: Option<(RecordBatch, usize)>,
    pending: VecDeque<PendingChunk>,
    front_seq: u64,
    buffer: Vec<(u64, usize, Vec<f32>)>,
    ready: VecDeque<RecordBatch>,
    finished: bool,
}

impl ClipTtaStream {
    /// A stream over `input`. `cell` holds the adapter shared by partitions (ignored with
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
        cell: Arc<OnceCell<SharedAdapter>>,
    ) -> Self {
        Self {
            input,
            schema,
            options,
            source,
            drop_column,
            embedding_dim,
            metrics,
            cell,
            model_store: None,
            adapter: None,
            preprocessor: Arc::new(PreprocessorConfig::clip_default(224)),
            crop: 224,
            current: None,
            pending: VecDeque::new(),
            front_seq: 0,
            buffer: Vec::new(),
            ready: VecDeque::new(),
            finished: false,
        }
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
            self.ensure_adapter().await?;
            match self.next_chunk().await? {
                Some(chunk) => self.process_chunk(chunk).await?,
                None => {
                    while !self.buffer.is_empty() {
                        let n = self.buffer.len().min(self.options.adapt_batch_size);
                        let items: Vec<_> = self.buffer.drain(..n).collect();
                        self.adapt(items).await?;
                    }
                    self.emit_completed()?;
                    if !self.pending.is_empty() {
                        return Err(internal_datafusion_err!("ClipTtaStream ended with {} unfinished chunks", self.pending.len()));
                    }
                    self.save_state().await?;
                    self.finished = true;
                }
            }
        }
    }

    async fn ensure_adapter(&mut self) -> Result<()> {
        if self.adapter.is_some() {
            return Ok(());
        }
        let start = Instant::now();
        let options = self.options.clone();
        let store = self.model_store.clone();
        let build = move || async move {
            let dir = model_dir(&options, store.as_ref()).await?;
            let adapter = tokio::task::spawn_blocking(move || build_adapter(&options, &dir))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))??;
            Ok::<_, DataFusionError>(Arc::new(Mutex::new(adapter)))
        };
        let adapter = if self.options.reset == Reset::PerPartition {
            build().await?
        } else {
            self.cell.get_or_try_init(build).await?.clone()
        };
        {
            let guard = adapter.lock().unwrap_or_else(PoisonError::into_inner);
            let pre = guard.model().preprocessor().clone();
            self.crop = pre.crop_size;
            self.preprocessor = Arc::new(pre);
        }
        self.adapter = Some(adapter);
        self.metrics.load_time.add_elapsed(start);
        Ok(())
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
                Some(batch) => self.current = Some((batch?, 0)),
                None => return Ok(None),
            }
        }
    }

    fn jobs(&self, chunk: &RecordBatch) -> Result<Vec<Job>> {
        let n = chunk.num_rows();
        match &self.source {
            ImageSource::Bytes { column } => {
                let array = chunk.column(*column).clone();
                if !matches!(array.data_type(), DataType::Binary | DataType::LargeBinary | DataType::BinaryView) {
                    return exec_err!("cliptta: image column has type {}, expected Binary", array.data_type());
                }
                Ok((0..n)
                    .map(|i| {
                        if array.is_null(i) {
                            Job::Failed(STATUS_NULL, "image is null".into())
                        } else {
                            Job::Array(array.clone(), i)
                        }
                    })
                    .collect())
            }
            ImageSource::Location { column, size_column, store_url, .. } => {
                let urls = arrow::compute::cast(chunk.column(*column), &DataType::Utf8)?;
                let urls = urls.as_string::<i32>();
                let sizes = match size_column {
                    Some(c) => Some(arrow::compute::cast(chunk.column(*c), &DataType::Int64)?),
                    None => None,
                };
                let sizes = sizes.as_ref().map(|s| s.as_primitive::<arrow::datatypes::Int64Type>());
                Ok((0..n)
                    .map(|i| {
                        if urls.is_null(i) {
                            return Job::Failed(STATUS_NULL, "location is null".into());
                        }
                        let url = urls.value(i);
                        if let Some(size) = sizes.filter(|s| s.is_valid(i)).map(|s| s.value(i)) {
                            if size as u64 > self.options.max_bytes {
                                let e = crate::Error::TooLarge { what: "size in bytes", actual: size as u64, limit: self.options.max_bytes };
                                return Job::Failed(e.status(), e.to_string());
                            }
                        }
                        match url.strip_prefix(store_url.as_str()).map(Path::parse) {
                            Some(Ok(path)) => Job::Fetch { path, url: url.to_string() },
                            _ => Job::Failed("fetch_error", format!("`{url}` is not in the store {store_url}")),
                        }
                    })
                    .collect())
            }
        }
    }

    async fn process_chunk(&mut self, chunk: RecordBatch) -> Result<()> {
        let jobs = self.jobs(&chunk)?;
        let store = match &self.source {
            ImageSource::Location { store, .. } => Some(store.clone()),
            ImageSource::Bytes { .. } => None,
        };
        let ctx = LoadContext {
            store,
            fetch: self.options.fetch_options(),
            limits: self.options.limits(),
            preprocessor: self.preprocessor.clone(),
            fetch_time: self.metrics.fetch_time.clone(),
            decode_time: self.metrics.decode_time.clone(),
            preprocess_time: self.metrics.preprocess_time.clone(),
        };
        let results: Vec<Result<Vec<f32>, LoadError>> = futures::stream::iter(jobs)
            .map(|job| load_image(job, ctx.clone()))
            .buffered(self.options.concurrency)
            .collect()
            .await;
        let n = chunk.num_rows();
        let seq = self.front_seq + self.pending.len() as u64;
        let mut pending = PendingChunk {
            batch: chunk,
            failures: (0..n).map(|_| None).collect(),
            predictions: (0..n).map(|_| None).collect(),
            waiting: 0,
        };
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(pixels) => {
                    self.buffer.push((seq, i, pixels));
                    pending.waiting += 1;
                }
                Err(LoadError::Row(status, message)) => {
                    self.metrics.record_failure(status);
                    pending.failures[i] = Some((status, message));
                }
            }
        }
        self.pending.push_back(pending);
        while self.buffer.len() >= self.options.adapt_batch_size {
            let items: Vec<_> = self.buffer.drain(..self.options.adapt_batch_size).collect();
            self.adapt(items).await?;
        }
        self.emit_completed()
    }

    async fn adapt(&mut self, items: Vec<(u64, usize, Vec<f32>)>) -> Result<()> {
        let adapter = self.adapter.clone().ok_or_else(|| internal_datafusion_err!("ClipTtaStream has no adapter"))?;
        let crop = self.crop;
        let timer = self.metrics.adapt_time.clone();
        let (keys, pixels): (Vec<(u64, usize)>, Vec<Vec<f32>>) = items.into_iter().map(|(s, i, p)| ((s, i), p)).unzip();
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
        let BatchPrediction { labels, confidence, probs, embeddings, ood_score, is_ood, .. } = prediction;
        let mut probs = probs.into_iter();
        let mut embeddings = embeddings.into_iter();
        for (k, (seq, row)) in keys.into_iter().enumerate() {
            let p = probs.next();
            let e = embeddings.next();
            let chunk = self
                .pending
                .get_mut((seq - self.front_seq) as usize)
                .ok_or_else(|| internal_datafusion_err!("prediction for a chunk already emitted"))?;
            chunk.predictions[row] = Some(RowPrediction {
                label: labels[k],
                confidence: confidence[k],
                ood_score: ood_score[k],
                is_ood: is_ood[k],
                probs: if self.options.emit_probs { p } else { None },
                embedding: if self.options.emit_embedding { e } else { None },
            });
            chunk.waiting -= 1;
        }
        Ok(())
    }

    fn emit_completed(&mut self) -> Result<()> {
        while self.pending.front().is_some_and(|c| c.waiting == 0) {
            if let Some(chunk) = self.pending.pop_front() {
                self.front_seq += 1;
                let batch = self.build_output(chunk)?;
                self.ready.push_back(batch);
            }
        }
        Ok(())
    }

    fn build_output(&self, chunk: PendingChunk) -> Result<RecordBatch> {
        let n = chunk.batch.num_rows();
        let mut columns: Vec<ArrayRef> = chunk
            .batch
            .columns()
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.drop_column)
            .map(|(_, c)| c.clone())
            .collect();
        let mut label = StringBuilder::with_capacity(n, n * 8);
        let mut label_id = Int32Builder::with_capacity(n);
        let mut confidence = Float32Builder::with_capacity(n);
        let mut ood_score = Float32Builder::with_capacity(n);
        let mut is_ood = BooleanBuilder::with_capacity(n);
        let mut status = StringBuilder::with_capacity(n, n * 4);
        let mut error = StringBuilder::new();
        let item = Arc::new(Field::new_list_field(DataType::Float32, false));
        let mut probs = ListBuilder::new(Float32Builder::new()).with_field(item.clone());
        let dim = self.embedding_dim.unwrap_or(0);
        let mut embedding = FixedSizeListBuilder::new(Float32Builder::new(), dim).with_field(item);
        for (prediction, failure) in chunk.predictions.into_iter().zip(chunk.failures) {
            match (prediction, failure) {
                (Some(p), _) => {
                    let name = self.options.classes.get(p.label as usize).map(String::as_str);
                    label.append_option(name);
                    label_id.append_value(p.label as i32);
                    confidence.append_value(p.confidence);
                    ood_score.append_value(p.ood_score);
                    is_ood.append_value(p.is_ood);
                    status.append_value(STATUS_OK);
                    error.append_null();
                    probs.append_option(p.probs.map(|v| v.into_iter().map(Some)));
                    match p.embedding {
                        Some(v) if v.len() == dim as usize => {
                            embedding.values().append_slice(&v);
                            embedding.append(true);
                        }
                        _ => {
                            embedding.values().append_nulls(dim as usize);
                            embedding.append(false);
                        }
                    }
                    self.metrics.rows_ok.add(1);
                }
                (None, failure) => {
                    let (s, e) = failure.unwrap_or(("error", "row was neither predicted nor failed".into()));
                    label.append_null();
                    label_id.append_null();
                    confidence.append_null();
                    ood_score.append_null();
                    is_ood.append_null();
                    status.append_value(s);
                    error.append_value(e);
                    probs.append_null();
                    embedding.values().append_nulls(dim as usize);
                    embedding.append(false);
                }
            }
        }
        columns.push(Arc::new(label.finish()));
        columns.push(Arc::new(label_id.finish()));
        columns.push(Arc::new(confidence.finish()));
        columns.push(Arc::new(ood_score.finish()));
        columns.push(Arc::new(is_ood.finish()));
        columns.push(Arc::new(status.finish()));
        columns.push(Arc::new(error.finish()));
        if self.options.emit_probs {
            columns.push(Arc::new(probs.finish()));
        }
        if self.options.emit_embedding && self.embedding_dim.is_some() {
            columns.push(Arc::new(embedding.finish()));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    async fn save_state(&mut self) -> Result<()> {
        let (Some(path), Some(adapter)) = (self.options.save_state.clone(), self.adapter.clone()) else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || adapter.lock().unwrap_or_else(PoisonError::into_inner).save_state(&path))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        Ok(())
    }
}

#[derive(Clone)]
struct LoadContext {
    store: Option<Arc<dyn ObjectStore>>,
    fetch: FetchOptions,
    limits: DecodeLimits,
    preprocessor: Arc<PreprocessorConfig>,
    fetch_time: Time,
    decode_time: Time,
    preprocess_time: Time,
}

enum LoadError {
    Row(&'static str, String),
}

impl From<crate::Error> for LoadError {
    fn from(e: crate::Error) -> Self {
        LoadError::Row(e.status(), e.to_string())
    }
}

fn binary_value(array: &dyn Array, i: usize) -> Option<&[u8]> {
    match array.data_type() {
        DataType::Binary => Some(array.as_binary::<i32>().value(i)),
        DataType::LargeBinary => Some(array.as_binary::<i64>().value(i)),
        DataType::BinaryView => Some(array.as_binary_view().value(i)),
        _ => None,
    }
}

/// Fetches (if needed), decodes and preprocesses one image; failures are row data.
async fn load_image(job: Job, ctx: LoadContext) -> Result<Vec<f32>, LoadError> {
    enum Blob {
        Array(ArrayRef, usize),
        Bytes(Bytes),
    }
    let blob = match job {
        Job::Failed(status, message) => return Err(LoadError::Row(status, message)),
        Job::Array(array, i) => Blob::Array(array, i),
        Job::Fetch { path, url } => {
            let store = ctx.store.clone().ok_or_else(|| LoadError::Row("error", "no store for a location".into()))?;
            let start = Instant::now();
            let bytes = fetch(&store, &path, &url, &ctx.fetch).await;
            ctx.fetch_time.add_elapsed(start);
            Blob::Bytes(bytes?)
        }
    };
    let LoadContext { limits, preprocessor, decode_time, preprocess_time, .. } = ctx;
    let decoded = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let image = match &blob {
            Blob::Array(array, i) => match binary_value(array.as_ref(), *i) {
                Some(bytes) => decode(bytes, &limits),
                None => Err(crate::Error::InvalidInput("image column is not binary".into())),
            },
            Blob::Bytes(bytes) => decode(bytes, &limits),
        };
        decode_time.add_elapsed(start);
        let start = Instant::now();
        let pixels = preprocess(&image?, &preprocessor);
        preprocess_time.add_elapsed(start);
        pixels
    })
    .await
    .map_err(|e| LoadError::Row("error", format!("decode task failed: {e}")))?;
    Ok(decoded?)
}

/// Adapts a stream of record batches with a binary image column: the output has every input
/// column, then the prediction columns (see [`super::schema`]), one row per input row.
///
/// The first adaptation loads the model (blocking pool); must be polled inside a Tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread")]
/// # async fn main() -> datafusion::common::Result<()> {
/// # let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip");
/// use std::sync::Arc;
/// use arrow::array::{BinaryArray, RecordBatch};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use datafusion::physical_plan::{common::collect, memory::MemoryStream};
/// use cliptta::sql::{adapt_stream, ClipTtaOptions};
///
/// let schema = Arc::new(Schema::new(vec![Field::new("image", DataType::Binary, true)]));
/// let images = BinaryArray::from_opt_vec(vec![Some(b"not an image".as_slice()), None]);
/// let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(images)])?;
/// let input = Box::pin(MemoryStream::try_new(vec![batch], schema, None)?);
/// let options = ClipTtaOptions::new(vec!["cat".into(), "dog".into()], model);
/// let out = collect(adapt_stream(input, "image", options)?).await?;
/// assert_eq!(out[0].num_rows(), 2);
/// assert_eq!(out[0].schema().field(1).name(), "label");
/// # Ok(()) }
/// ```
pub fn adapt_stream(input: SendableRecordBatchStream, image_column: &str, options: ClipTtaOptions) -> Result<SendableRecordBatchStream> {
    let input_schema = input.schema();
    let column = input_schema.index_of(image_column)?;
    if let Err(e) = options.method_config() {
        return exec_err!("cliptta: {e}");
    }
    // A model URL's config.json, for the embedding width (no session: stores from the environment).
    super::provider::prefetch_model_config(&datafusion::execution::runtime_env::RuntimeEnv::default(), &options)?;
    let dim = embedding_dim(&options)?;
    let schema = output_schema(&input_schema, None, &prediction_fields(&options, dim))?;
    let metrics = ClipTtaMetrics::new(&ExecutionPlanMetricsSet::new(), 0);
    let stream = ClipTtaStream::new(
        input,
        schema,
        Arc::new(options),
        ImageSource::Bytes { column },
        None,
        dim,
        metrics,
        Arc::new(OnceCell::new()),
    );
    Ok(stream.into_stream())
}
