//! `ClipTtaExec`: the stateful operator that appends predictions to every input row.
//!
//! Shaped like DataFusion's `AsyncFuncExec`: input columns (less the image bytes), then the
//! prediction columns; schema and plan properties computed once in `try_new`. Each partition
//! runs one [`ClipTtaStream`]; with `reset = never` the partitions share one adapter (and it
//! keeps adapting if the plan is executed again), with `per_partition` each has its own.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::equivalence::ProjectionMapping;
use datafusion::physical_expr::{Partitioning, PhysicalExpr};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties};
use tokio::sync::OnceCell;

use super::metrics::ClipTtaMetrics;
use super::options::ClipTtaOptions;
use super::schema::{embedding_dim, output_schema, prediction_fields};
use super::adapters::SharedAdapter;
use super::image_source::ImageSource;
use super::stores::resolve_model_store;
use super::stream::{ClipTtaStream, DiagnosticsSink};

/// Appends cliptta's prediction columns to its input (see the module docs).
#[derive(Debug, Clone)]
pub struct ClipTtaExec {
    input: Arc<dyn ExecutionPlan>,
    options: Arc<ClipTtaOptions>,
    source: ImageSource,
    drop_image: bool,
    embedding_dim: Option<i32>,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// The metrics of the partitions executed so far, for live progress (clones share the
    /// counters with the running streams).
    live: Arc<Mutex<Vec<ClipTtaMetrics>>>,
    /// Every partition's per-batch diagnostics so far (resumed ones included).
    diagnostics: DiagnosticsSink,
    adapter: Arc<OnceCell<SharedAdapter>>,
}

impl ClipTtaExec {
    /// Wraps `input`, whose images come from `source`. With `drop_image` the binary image
    /// column is left out of the output.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, source: ImageSource, options: Arc<ClipTtaOptions>, drop_image: bool) -> Result<Self> {
        let dim = embedding_dim(&options)?;
        let drop = source.dropped_column(drop_image);
        let schema = output_schema(&input.schema(), drop, &prediction_fields(&options, dim))?;
        let cache = Self::compute_properties(&input, schema, drop)?;
        Ok(Self {
            input,
            options,
            source,
            drop_image,
            embedding_dim: dim,
            cache: Arc::new(cache),
            metrics: ExecutionPlanMetricsSet::new(),
            live: Arc::default(),
            diagnostics: Arc::default(),
            adapter: Arc::new(OnceCell::new()),
        })
    }

    /// Rows leave in input order with the input's columns first (less a dropped image column),
    /// so the input's orderings and equalities hold for those columns: an `ORDER BY` on them
    /// can be satisfied below this node, and the optimiser must be told so, since
    /// [`ExecutionPlan::maintains_input_order`] says the order is kept.
    fn compute_properties(input: &Arc<dyn ExecutionPlan>, schema: SchemaRef, drop: Option<usize>) -> Result<PlanProperties> {
        let input_schema = input.schema();
        let kept: Vec<usize> = (0..input_schema.fields().len()).filter(|i| Some(*i) != drop).collect();
        let mapping = ProjectionMapping::from_indices(&kept, &input_schema)?;
        Ok(PlanProperties::new(
            input.equivalence_properties().project(&mapping, schema),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            input.pipeline_behavior(),
            input.boundedness(),
        ))
    }

    /// The input plan.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// The scan's options.
    pub fn options(&self) -> &ClipTtaOptions {
        &self.options
    }

    /// Where each row's image comes from.
    pub fn source(&self) -> &ImageSource {
        &self.source
    }

    /// Whether the binary image column is left out of the output.
    pub fn drops_image(&self) -> bool {
        self.drop_image
    }

    /// The first `ClipTtaExec` in `plan` (the node itself or a descendant, depth first), as the
    /// plan node, for reading its [`ClipTtaExec::live_metrics`] while the plan runs.
    pub fn find(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
        if plan.is::<ClipTtaExec>() {
            return Some(plan.clone());
        }
        plan.children().into_iter().find_map(Self::find)
    }

    /// The live metrics of every partition started so far: read them while the plan runs for
    /// progress (`cliptta label` does), or after it for totals.
    pub fn live_metrics(&self) -> Vec<ClipTtaMetrics> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// One row per adaptation batch of every partition run so far (with a checkpoint, the
    /// batches of earlier runs too), sorted by partition and batch: what `cliptta label` writes
    /// as `batches.parquet`. Columns: [`crate::job::batches_schema`].
    pub fn diagnostics(&self) -> crate::Result<RecordBatch> {
        let batches = self.diagnostics.lock().unwrap_or_else(PoisonError::into_inner).clone();
        crate::job::sort_batches(&batches)
    }

    fn drop_column(&self) -> Option<usize> {
        self.source.dropped_column(self.drop_image)
    }
}

impl DisplayAs for ClipTtaExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let o = &self.options;
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "ClipTtaExec: method={}, classes={}, batch={}, reset={}", o.method, o.classes.len(), o.adapt_batch_size, o.reset)?;
                if o.open_set {
                    write!(f, ", open_set=true")?;
                }
                let changed = o.changed_settings();
                if !changed.is_empty() {
                    write!(f, ", settings=[{}]", changed.join(", "))?;
                }
                Ok(())
            }
            DisplayFormatType::TreeRender => {
                writeln!(f, "method={}", o.method)?;
                writeln!(f, "classes={}", o.classes.len())?;
                writeln!(f, "batch={}", o.adapt_batch_size)?;
                writeln!(f, "reset={}", o.reset)?;
                if o.open_set {
                    writeln!(f, "open_set=true")?;
                }
                for setting in o.changed_settings() {
                    writeln!(f, "{setting}")?;
                }
                Ok(())
            }
        }
    }
}

impl ExecutionPlan for ClipTtaExec {
    fn name(&self) -> &str {
        "ClipTtaExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(&self, _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("ClipTtaExec takes one child, got {}", children.len());
        }
        let input = children.swap_remove(0);
        let cache = Self::compute_properties(&input, self.schema(), self.source.dropped_column(self.drop_image))?;
        Ok(Arc::new(Self {
            input,
            cache: Arc::new(cache),
            metrics: ExecutionPlanMetricsSet::new(),
            live: Arc::default(),
            diagnostics: Arc::default(),
            ..Self::clone(&self)
        }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let model_store = resolve_model_store(context.runtime_env().as_ref(), &self.options)?;
        let metrics = ClipTtaMetrics::new(&self.metrics, partition);
        self.live.lock().unwrap_or_else(PoisonError::into_inner).push(metrics.clone());
        let input = self.input.execute(partition, context)?;
        let stream = ClipTtaStream::new(
            input,
            self.schema(),
            self.options.clone(),
            self.source.clone(),
            self.drop_column(),
            self.embedding_dim,
            metrics,
            self.adapter.clone(),
        )
        .with_model_store(model_store)
        .with_diagnostics(self.diagnostics.clone())
        .with_partition(partition);
        Ok(stream.into_stream())
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
