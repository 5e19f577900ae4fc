//! `ClipTtaProvider`: the table behind `cliptta(...)` and `cliptta_table(...)`. Its schema is
//! fixed at planning without I/O (beyond the model's small config.json when
//! `emit_embedding` is set); listing, store setup and model loading wait for `scan`/`execute`.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{plan_err, Result};
use datafusion::datasource::TableType;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectStore;

use super::exec::ClipTtaExec;
use super::listing::ImageListingExec;
use super::options::ClipTtaOptions;
use super::schema::{embedding_dim, lake_schema, output_schema, prediction_fields};
use super::stream::ImageSource;
use crate::source::{build_store, cache_root, fetch_model, store_options_for, ImageLocation, ModelLocation};

/// Where a provider's images come from.
#[derive(Debug, Clone)]
pub enum ProviderSource {
    /// Objects under a location (`cliptta('s3://...', ...)`).
    Lake(ImageLocation),
    /// A registered table with a binary image column (`cliptta_table('t', 'image', ...)`).
    Table {
        /// The table's name as given.
        name: String,
        /// The table.
        table: Arc<dyn TableProvider>,
        /// Index of the image column in its schema.
        image_column: usize,
    },
}

/// The table of predictions (see the module docs).
#[derive(Debug)]
pub struct ClipTtaProvider {
    source: ProviderSource,
    options: Arc<ClipTtaOptions>,
    schema: SchemaRef,
}

impl ClipTtaProvider {
    /// A provider over `source` (no I/O).
    pub fn try_new(source: ProviderSource, options: ClipTtaOptions) -> Result<Self> {
        let dim = embedding_dim(&options)?;
        let appended = prediction_fields(&options, dim);
        let schema = match &source {
            ProviderSource::Lake(_) => output_schema(&lake_schema(), None, &appended)?,
            ProviderSource::Table { table, image_column, .. } => output_schema(&table.schema(), Some(*image_column), &appended)?,
        };
        Ok(Self { source, options: Arc::new(options), schema })
    }

    /// The options.
    pub fn options(&self) -> &ClipTtaOptions {
        &self.options
    }

    /// Where the images come from.
    pub fn source(&self) -> &ProviderSource {
        &self.source
    }
}

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
        ModelLocation::Remote(location) => {
            Ok(Some(resolve_store(env, location, &options.store_options)?))
        }
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

#[async_trait]
impl TableProvider for ClipTtaProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(&self, state: &dyn Session, projection: Option<&Vec<usize>>, _filters: &[Expr], _limit: Option<usize>) -> Result<Arc<dyn ExecutionPlan>> {
        let exec: Arc<dyn ExecutionPlan> = match &self.source {
            ProviderSource::Lake(location) => {
                let store = resolve_store(state.runtime_env(), location, &self.options.store_options)?;
                let listing = ImageListingExec::try_new(location.clone(), store.clone(), self.options.order(), self.options.partitions)?
                    .with_store_options(self.options.store_options.clone());
                let source = ImageSource::Location { column: 0, size_column: Some(1), store, store_url: location.store_url().to_string() };
                Arc::new(ClipTtaExec::try_new(Arc::new(listing), source, self.options.clone(), false)?)
            }
            ProviderSource::Table { table, image_column, .. } => {
                let input = table.scan(state, None, &[], None).await?;
                let source = ImageSource::Bytes { column: *image_column };
                Arc::new(ClipTtaExec::try_new(input, source, self.options.clone(), true)?)
            }
        };
        match projection {
            Some(columns) if columns.len() != self.schema.fields().len() || columns.iter().enumerate().any(|(i, c)| i != *c) => {
                let exprs = columns.iter().map(|&i| {
                    let name = self.schema.field(i).name();
                    ProjectionExpr::new(Arc::new(Column::new(name, i)), name.clone())
                });
                Ok(Arc::new(ProjectionExec::try_new(exprs, exec)?))
            }
            _ => Ok(exec),
        }
    }
}
