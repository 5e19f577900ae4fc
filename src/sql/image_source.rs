//! [`ImageSource`]: where each input row's image comes from, as a `ClipTtaExec` sees it.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};

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

impl ImageSource {
    /// The input column left out of the output when `drop_image` is asked: the image bytes
    /// (a location column is always kept).
    pub fn dropped_column(&self, drop_image: bool) -> Option<usize> {
        match (self, drop_image) {
            (ImageSource::Bytes { column }, true) => Some(*column),
            _ => None,
        }
    }

    /// What identifies row `row` of `batch` for a checkpoint: its location, or a digest of its
    /// image bytes (`None` for a null or a row out of range).
    pub fn row_identity(&self, batch: &RecordBatch, row: usize) -> Option<String> {
        let (ImageSource::Bytes { column } | ImageSource::Location { column, .. }) = self;
        let array = batch.columns().get(*column)?;
        if row >= array.len() || array.is_null(row) {
            return None;
        }
        let bytes = match array.data_type() {
            DataType::Utf8 => return Some(array.as_string::<i32>().value(row).to_string()),
            DataType::LargeUtf8 => return Some(array.as_string::<i64>().value(row).to_string()),
            DataType::Utf8View => return Some(array.as_string_view().value(row).to_string()),
            _ => binary_value(array.as_ref(), row)?,
        };
        Some(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The store the rows' locations point into (none for bytes in a column).
    pub fn store(&self) -> Option<&Arc<dyn ObjectStore>> {
        match self {
            ImageSource::Location { store, .. } => Some(store),
            ImageSource::Bytes { .. } => None,
        }
    }
}

/// Row `i` of a Binary, LargeBinary or BinaryView column (`None` for another type).
pub(super) fn binary_value(array: &dyn Array, i: usize) -> Option<&[u8]> {
    match array.data_type() {
        DataType::Binary => Some(array.as_binary::<i32>().value(i)),
        DataType::LargeBinary => Some(array.as_binary::<i64>().value(i)),
        DataType::BinaryView => Some(array.as_binary_view().value(i)),
        _ => None,
    }
}
