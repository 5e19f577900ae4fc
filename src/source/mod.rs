//! Where images come from: object-store locations (local paths, `file://`, `s3://`, `gs://`,
//! `az://`, `http(s)://`, `memory://`) with credentials from the environment, listing with
//! globs and a seeded order, a stable assignment of objects to partitions, and bounded concurrent
//! fetches with timeouts and retries; and checkpoints in a store, downloaded into a local cache.
//!
//! Nothing here knows about DataFusion; `sql/` registers the stores built here with a
//! session's runtime environment.

mod default_model;
pub mod embedded;
mod fetch;
mod listing;
mod location;
mod model;
mod partition;
mod store;

pub use default_model::{default_model_dir, materialise_in, DEFAULT_MODEL_CLASSES, MODEL_ENV};
pub use fetch::{fetch, FetchOptions};
pub use listing::{list_objects, Listing, ListingOrder};
pub use location::{Extensions, ImageLocation, IMAGE_EXTENSIONS};
pub use model::{cache_root, fetch_model, model_cache_dir, ModelLocation, MODEL_FILES};
pub use partition::partition_of;
pub use store::{build_store, check_store_options, is_store_option, store_options_for};
