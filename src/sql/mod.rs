//! DataFusion integration: the `cliptta(...)` and `cliptta_table(...)` table functions, their
//! provider, the stateful [`ClipTtaExec`] and its per-partition [`ClipTtaStream`], plus
//! [`adapt_stream`] for Arrow record batch streams, and [`warm_start`] (adapt once on a lake's
//! first images, then start every partition from that state).
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> datafusion::common::Result<()> {
//! # let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip");
//! # let lake = tempfile::tempdir()?;
//! # image::RgbImage::new(8, 8).save(lake.path().join("a.png")).map_err(|e| datafusion::error::DataFusionError::External(e.into()))?;
//! use datafusion::prelude::SessionContext;
//! let ctx = SessionContext::new();
//! cliptta::sql::register(&ctx);
//! let sql = format!(
//!     "SELECT label, status FROM cliptta('{}', 'classes', 'cat,dog', 'model', '{}')",
//!     lake.path().display(),
//!     model.display()
//! );
//! let batches = ctx.sql(&sql).await?.collect().await?;
//! assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
//! # Ok(()) }
//! ```

mod adapt_stream;
mod adapters;
mod error;
mod exec;
mod image_source;
mod listing;
mod loader;
mod metrics;
mod named_args;
mod options;
mod provider;
mod refetch;
mod reorder;
mod schema;
mod stores;
mod stream;
mod subquery_input;
mod udtf;
mod warm_start;

use std::sync::Arc;

use datafusion::prelude::SessionContext;

pub use exec::ClipTtaExec;
pub use listing::ImageListingExec;
pub use metrics::ClipTtaMetrics;
pub use named_args::NamedArguments;
pub use subquery_input::SubqueryInput;
pub use options::{default_model, option, options_markdown, ClipTtaOptions, OptionDef, OptionValue, Reset, OPTIONS};
pub use provider::{ClipTtaProvider, ProviderSource};
pub use schema::{lake_schema, prediction_fields, PredictionBuilder, PredictionColumn};
pub use adapt_stream::adapt_stream;
pub use adapters::{build_adapter, SharedAdapter};
pub use image_source::ImageSource;
pub use loader::RowFailure;
pub use stores::{model_dir, prefetch_model_config, resolve_model_store, resolve_store};
pub use stream::{ClipTtaStream, DiagnosticsSink};
pub use udtf::{ClipTtaBatchesFunction, ClipTtaFunction, ClipTtaTableFunction};
pub use warm_start::warm_start;

/// Registers `cliptta`, `cliptta_table` and `cliptta_batches` with `ctx`, and the relation planners that let their
/// options be given as `name => value` ([`NamedArguments`]) and `cliptta_table` read a query
/// (`cliptta_table((SELECT ...), 'image', ...)`, [`SubqueryInput`]).
pub fn register(ctx: &SessionContext) {
    ctx.register_udtf("cliptta", Arc::new(ClipTtaFunction));
    ctx.register_udtf("cliptta_table", Arc::new(ClipTtaTableFunction));
    ctx.register_udtf("cliptta_batches", Arc::new(ClipTtaBatchesFunction));
    // The planner registered last runs first: named arguments are rewritten before the
    // subquery input reads the arguments.
    if let Err(e) = ctx.register_relation_planner(Arc::new(SubqueryInput::new(ctx.runtime_env()))) {
        tracing::warn!("query input for cliptta_table(...) is unavailable: {e}");
    }
    if let Err(e) = ctx.register_relation_planner(Arc::new(NamedArguments)) {
        tracing::warn!("named arguments for cliptta(...) are unavailable: {e}");
    }
}
