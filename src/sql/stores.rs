//! Object stores for a scan's images and model, resolved through the session, and the local
//! directory of the model (downloading a model URL into the cache).

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::common::{plan_err, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::ObjectStore;

use super::options::ClipTtaOptions;
use crate::source::{build_store, cache_root, fetch_model, store_options_for, ImageLocation, ModelLocation};

/// The store for `location`: the one registered in the session for its URL, else one built
/// from the environment and `store_options` and registered, so later scans in the session
/// reuse it. Explicit store options always build (and register) a fresh store. Only the
/// options that apply to the location's kind of store are used (a scan's options may serve two
/// stores: the images' and the model's).
pub fn resolve_store(env: &RuntimeEnv, location: &ImageLocation, store_options: &[(String, String)]) -> Result<Arc<dyn ObjectStore>> {
    let url = location.store_url();
    let store_options = store_options_for(url, store_options);
    if store_options.is_empty() {
        if let Ok(store) = env.object_store(ObjectStoreUrl::parse(url.as_str())?) {
            return Ok(store);
        }
    }
    let store = build_store(url, &store_options)?;
    env.register_object_store(url, store.clone());
    Ok(store)
}

/// The store holding a remote model (`None` for a local directory), resolved as for a lake
/// with the store options that apply to the model's URL.
pub fn resolve_model_store(env: &RuntimeEnv, options: &ClipTtaOptions) -> Result<Option<Arc<dyn ObjectStore>>> {
    match &options.model {
        ModelLocation::Local(_) => Ok(None),
        ModelLocation::Remote(location) => Ok(Some(resolve_store(env, location, &options.store_options)?)),
    }
}

/// The output schema of a scan with `emit_embedding` needs the model's `config.json`; for a
/// remote model this fetches that one small file into the model's cache directory (the
/// weights wait for `execute`). Planning is synchronous, so the fetch blocks this thread
/// (`block_in_place`), which needs a multi-threaded Tokio runtime.
pub fn prefetch_model_config(env: &RuntimeEnv, options: &ClipTtaOptions) -> Result<()> {
    let (ModelLocation::Remote(location), true) = (&options.model, options.emit_embedding) else {
        return Ok(());
    };
    let Some(store) = resolve_model_store(env, options)? else {
        return Ok(());
    };
    let root = cache_root();
    let fetch = fetch_model(&store, location, &root, Some(&["config.json"]));
    let fetched = match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(fetch))
        }
        Ok(_) => {
            return plan_err!(
                "option `model`: emit_embedding with a model URL reads config.json while planning, which needs a multi-threaded Tokio runtime; use a local model directory"
            )
        }
        // Outside any runtime (a synchronous caller), a short-lived one drives the fetch.
        Err(_) => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(fetch),
            Err(e) => return plan_err!("option `model`: cannot start a runtime to fetch config.json: {e}"),
        },
    };
    match fetched {
        Ok(_) => Ok(()),
        Err(e) => plan_err!("option `model`: {e}"),
    }
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
