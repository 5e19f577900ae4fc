//! [`ImageSource`]: where each input row's image comes from, as a `ClipTtaExec` sees it.

use std::sync::Arc;

use object_store::ObjectStore;

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

    /// The store the rows' locations point into (none for bytes in a column).
    pub fn store(&self) -> Option<&Arc<dyn ObjectStore>> {
        match self {
            ImageSource::Location { store, .. } => Some(store),
            ImageSource::Bytes { .. } => None,
        }
    }
}
