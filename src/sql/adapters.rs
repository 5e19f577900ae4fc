//! Adapter construction and sharing: one adapter per scan (`reset = never`, shared by the
//! scan's partitions) or one per partition.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use datafusion::common::{DataFusionError, Result};
use object_store::ObjectStore;
use tokio::sync::OnceCell;

use super::options::{ClipTtaOptions, Reset};
use super::stores::model_dir;
use crate::model::{load_cached, LoadOptions, PreprocessorConfig};
use crate::tta::Adapter;

/// An adapter shared by the partitions of one scan (`reset = never`).
pub type SharedAdapter = Arc<Mutex<Adapter>>;

/// Builds the adapter the options describe from the model in `model_dir` (see
/// [`super::stores::model_dir`]) (blocking: loads or reuses the model, encodes the class
/// prompts, restores `resume`).
pub fn build_adapter(options: &ClipTtaOptions, model_dir: &Path) -> crate::Result<Adapter> {
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
    let mut adapter = Adapter::new(model, &options.classes, &options.templates, method)?.with_guard(options.guard);
    if let Some(path) = &options.resume {
        adapter.load_state(path)?;
    }
    Ok(adapter)
}

/// The adapter a partition uses, and its model's preprocessing: a fresh one with
/// `reset = per_partition`, else the scan's (`shared`, built by the first partition to ask).
pub async fn partition_adapter(
    options: &Arc<ClipTtaOptions>,
    shared: &OnceCell<SharedAdapter>,
    model_store: Option<Arc<dyn ObjectStore>>,
) -> Result<(SharedAdapter, PreprocessorConfig)> {
    let build = || {
        let options = options.clone();
        async move {
            let dir = model_dir(&options, model_store.as_ref()).await?;
            let adapter = tokio::task::spawn_blocking(move || build_adapter(&options, &dir))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))??;
            Ok::<_, DataFusionError>(Arc::new(Mutex::new(adapter)))
        }
    };
    let adapter = if options.reset == Reset::PerPartition { build().await? } else { shared.get_or_try_init(build).await?.clone() };
    let preprocessor = adapter.lock().unwrap_or_else(PoisonError::into_inner).model().preprocessor().clone();
    Ok((adapter, preprocessor))
}
