//! Warm start: adapt once on the first N images of a lake scan, then let every partition start
//! from that state instead of the checkpoint.
//!
//! With one adapting stream per partition (and on a cluster, one per task), each stream starts
//! cold and spends its first batches adapting. A warm start runs the scan's own options over the
//! first `n` objects of the lake's order (one stream, in this process: "one node"), saves the
//! adapted state (LayerNorms, Adam moments, OOD threshold; the replay memory of images is left
//! out to keep the state small: about 3 × 160 KB for ViT-B instead of megabytes of images) and
//! rewrites the plan so each scan resumes from it. On a cluster the state file's bytes travel in
//! the plan to every task (`cluster::codec`). The first `n` images are labelled again by their
//! partitions; the warm-up pass only produces the state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use datafusion::catalog::default_table_source::{provider_as_source, source_as_provider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::limit::GlobalLimitExec;
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::SessionContext;

use super::exec::ClipTtaExec;
use super::listing::ImageListingExec;
use super::options::{ClipTtaOptions, Reset};
use super::image_source::ImageSource;
use super::provider::{ClipTtaProvider, ProviderSource};
use super::stores::resolve_store;
use crate::error::Error;
use crate::source::ImageLocation;

/// Rewrites `plan` so every adapting `cliptta(...)` lake scan resumes from a state adapted on
/// its first `n` images; state files go to `dir`. Scans with method `zero_shot` (nothing to
/// adapt) and `cliptta_table(...)` scans are left as they are; `n = 0` changes nothing.
pub async fn warm_start(ctx: &SessionContext, plan: LogicalPlan, n: usize, dir: &Path) -> Result<LogicalPlan> {
    if n == 0 {
        return Ok(plan);
    }
    let mut scans: Vec<(usize, ImageLocation, ClipTtaOptions)> = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if let Ok(provider) = source_as_provider(&scan.source) {
                if let Some(p) = provider.downcast_ref::<ClipTtaProvider>() {
                    if let (ProviderSource::Lake(location), true) = (p.source(), p.options().method.adapts()) {
                        let key = Arc::as_ptr(&provider) as *const () as usize;
                        if !scans.iter().any(|(k, ..)| *k == key) {
                            scans.push((key, location.clone(), p.options().clone()));
                        }
                    }
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let mut replaced: HashMap<usize, Arc<ClipTtaProvider>> = HashMap::new();
    for (i, (key, location, options)) in scans.into_iter().enumerate() {
        let state = adapt_prefix(ctx, &location, &options, n, &dir.join(format!("warm-{i}.safetensors"))).await?;
        let mut warm = options;
        warm.resume = Some(state);
        replaced.insert(key, Arc::new(ClipTtaProvider::try_new(ProviderSource::Lake(location), warm)?));
    }
    let out = plan.transform_up(|node| {
        if let LogicalPlan::TableScan(scan) = &node {
            if let Ok(provider) = source_as_provider(&scan.source) {
                if let Some(new) = replaced.get(&(Arc::as_ptr(&provider) as *const () as usize)) {
                    let mut scan = scan.clone();
                    scan.source = provider_as_source(new.clone());
                    return Ok(Transformed::yes(LogicalPlan::TableScan(scan)));
                }
            }
        }
        Ok(Transformed::no(node))
    })?;
    Ok(out.data)
}

/// Adapts one stream on the first `n` objects of `location` (in the scan's order) and saves the
/// state, without the replay memory, at `path`.
async fn adapt_prefix(ctx: &SessionContext, location: &ImageLocation, options: &ClipTtaOptions, n: usize, path: &Path) -> Result<PathBuf> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::write(parent, e))?;
    }
    let mut warm = options.clone();
    warm.partitions = 1;
    warm.reset = Reset::Never;
    warm.save_state = Some(path.to_path_buf());
    let store = resolve_store(&ctx.runtime_env(), location, &warm.store_options)?;
    let listing = ImageListingExec::try_new(location.clone(), store.clone(), warm.order(), 1)?.with_store_options(warm.store_options.clone());
    let first: Arc<dyn ExecutionPlan> = Arc::new(GlobalLimitExec::new(Arc::new(listing), 0, Some(n)));
    let source = ImageSource::Location { column: 0, size_column: Some(1), store, store_url: location.store_url().to_string() };
    let exec = Arc::new(ClipTtaExec::try_new(first, source, Arc::new(warm), false)?);
    collect(exec, ctx.task_ctx()).await?;
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || drop_memory(&owned)).await.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))??;
    Ok(path.to_path_buf())
}

/// Removes the replay memory's tensors from a saved state (`load_state` then starts with an
/// empty memory, as a fresh adapter does).
fn drop_memory(path: &Path) -> crate::Result<()> {
    let weights = |e: candle_core::Error| Error::Weights { path: path.to_path_buf(), message: e.to_string() };
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(weights)?;
    tensors.retain(|name, _| !name.starts_with("memory."));
    candle_core::safetensors::save(&tensors, path).map_err(weights)
}
