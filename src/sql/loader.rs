//! Fetch, decode and preprocess the images of a chunk of rows: each row becomes preprocessed
//! pixels or a [`RowFailure`] (its status and message), never an error of the whole scan.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use bytes::Bytes;
use datafusion::common::{exec_err, Result};
use datafusion::physical_plan::metrics::Time;
use futures::StreamExt;
use object_store::path::Path;
use object_store::ObjectStore;

use super::image_source::{binary_value, ImageSource};
use crate::image::{decode, preprocess, DecodeLimits};
use crate::model::PreprocessorConfig;
use crate::source::{fetch, FetchOptions};
use crate::RowStatus;

/// Why one row has no prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct RowFailure {
    /// The row's `status`.
    pub status: RowStatus,
    /// The row's `error`.
    pub message: String,
}

impl RowFailure {
    fn new(status: RowStatus, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl From<crate::Error> for RowFailure {
    fn from(e: crate::Error) -> Self {
        Self::new(e.status(), e.to_string())
    }
}

/// What loading one row's image takes.
enum RowJob {
    Failed(RowFailure),
    InColumn(ArrayRef, usize),
    Fetch { path: Path, url: String },
}

/// How a chunk's images are loaded: the source, limits, preprocessing and the timers they add to.
#[derive(Clone)]
pub struct Loader {
    /// Where the rows' images are.
    pub source: ImageSource,
    /// Timeouts, retries.
    pub fetch: FetchOptions,
    /// Fetches and decodes in flight.
    pub concurrency: usize,
    /// Byte, pixel and side limits.
    pub limits: DecodeLimits,
    /// The model's preprocessing.
    pub preprocessor: Arc<PreprocessorConfig>,
    /// Time fetching.
    pub fetch_time: Time,
    /// Time decoding.
    pub decode_time: Time,
    /// Time preprocessing.
    pub preprocess_time: Time,
}

impl Loader {
    /// Each row of `chunk` as preprocessed pixels or its failure, in row order.
    pub async fn load(&self, chunk: &RecordBatch) -> Result<Vec<Result<Vec<f32>, RowFailure>>> {
        let jobs = self.jobs(chunk)?;
        Ok(futures::stream::iter(jobs).map(|job| self.load_one(job)).buffered(self.concurrency).collect().await)
    }

    fn jobs(&self, chunk: &RecordBatch) -> Result<Vec<RowJob>> {
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
                            RowJob::Failed(RowFailure::new(RowStatus::NullInput, "image is null"))
                        } else {
                            RowJob::InColumn(array.clone(), i)
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
                let sizes = sizes.as_ref().map(|s| s.as_primitive::<Int64Type>());
                let max_bytes = self.limits.max_bytes;
                Ok((0..n)
                    .map(|i| {
                        if urls.is_null(i) {
                            return RowJob::Failed(RowFailure::new(RowStatus::NullInput, "location is null"));
                        }
                        let url = urls.value(i);
                        if let Some(size) = sizes.filter(|s| s.is_valid(i)).map(|s| s.value(i)) {
                            if size as u64 > max_bytes {
                                let e = crate::Error::TooLarge { what: "size in bytes", actual: size as u64, limit: max_bytes };
                                return RowJob::Failed(e.into());
                            }
                        }
                        match url.strip_prefix(store_url.as_str()).map(Path::parse) {
                            Some(Ok(path)) => RowJob::Fetch { path, url: url.to_string() },
                            _ => RowJob::Failed(RowFailure::new(RowStatus::FetchError, format!("`{url}` is not in the store {store_url}"))),
                        }
                    })
                    .collect())
            }
        }
    }

    /// Fetches (if needed), decodes and preprocesses one image.
    async fn load_one(&self, job: RowJob) -> Result<Vec<f32>, RowFailure> {
        enum Blob {
            InColumn(ArrayRef, usize),
            Fetched(Bytes),
        }
        let blob = match job {
            RowJob::Failed(failure) => return Err(failure),
            RowJob::InColumn(array, i) => Blob::InColumn(array, i),
            RowJob::Fetch { path, url } => {
                let store: &Arc<dyn ObjectStore> =
                    self.source.store().ok_or_else(|| RowFailure::new(RowStatus::Error, "no store for a location"))?;
                let start = Instant::now();
                let bytes = fetch(store, &path, &url, &self.fetch).await;
                self.fetch_time.add_elapsed(start);
                Blob::Fetched(bytes?)
            }
        };
        let (limits, preprocessor) = (self.limits, self.preprocessor.clone());
        let (decode_time, preprocess_time) = (self.decode_time.clone(), self.preprocess_time.clone());
        let pixels = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let image = match &blob {
                Blob::InColumn(array, i) => match binary_value(array.as_ref(), *i) {
                    Some(bytes) => decode(bytes, &limits),
                    None => Err(crate::Error::Internal("image column is not binary".into())),
                },
                Blob::Fetched(bytes) => decode(bytes, &limits),
            };
            decode_time.add_elapsed(start);
            let start = Instant::now();
            let pixels = preprocess(&image?, &preprocessor);
            preprocess_time.add_elapsed(start);
            pixels
        })
        .await
        .map_err(|e| RowFailure::new(RowStatus::Error, format!("decode task failed: {e}")))?;
        Ok(pixels?)
    }
}

