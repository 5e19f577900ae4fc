//! `ClipTtaProvider`: the table behind `cliptta(...)` and `cliptta_table(...)`. Its schema is
//! fixed at planning without I/O (beyond the model's small config.json when
//! `emit_embedding` is set); listing, store setup and model loading wait for `scan`/`execute`.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::ExecutionPlan;

use super::exec::ClipTtaExec;
use super::listing::ImageListingExec;
use super::options::ClipTtaOptions;
use super::schema::{embedding_dim, lake_schema, output_schema, prediction_fields};
use super::image_source::ImageSource;
use super::stores::resolve_store;
use crate::source::ImageLocation;

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
    pub fn try_new(source: ProviderSource, mut options: ClipTtaOptions) -> Result<Self> {
        // A lake lists what the `extensions` option says.
        let source = match source {
            ProviderSource::Lake(location) => ProviderSource::Lake(location.with_extensions(options.extensions.clone())),
            table => table,
        };
        if options.lake.is_none() {
            options.lake = Some(match &source {
                ProviderSource::Lake(location) => location.original().to_string(),
                ProviderSource::Table { name, .. } => format!("table {name}"),
            });
        }
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
