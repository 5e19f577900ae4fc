//! `ImageListingExec`: the lake scan's listing. Lists a location's objects lazily at execution
//! (in the seeded order), keeps those whose stable path hash falls in the partition
//! ([`partition_of`]: the same split on every run and every process, which a cluster needs), and
//! emits `location` (object URL) and `size` columns; `ClipTtaExec` fetches the bytes.
//!
//! Which partitions a stream lists is data, not the `execute` index: the node reads it from its
//! one input, an in-memory `DataSourceExec` with one row (`partition`, UInt32) per partition.
//! Ballista's scheduler hands each task a copy of the stage plan cut down to that task's
//! partitions, but it only knows how to cut its own and DataFusion's leaves (shuffle readers,
//! file and memory `DataSourceExec`s: `restrict_plan_to_partitions` in ballista-scheduler); a
//! custom leaf keeps every partition and the shuffle writer would run all of them in every
//! task, returning each row once per task. With the ids as a memory input, the scheduler cuts
//! the input, our partition count follows it (`with_new_children`), and a task lists only its
//! own partitions. In one process the input simply holds every id, so `execute(i)` lists
//! partition `i` as before.

use std::fmt;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{exec_err, internal_err, plan_err, Result};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;

use super::schema::lake_schema;
use crate::source::{list_objects, partition_of, ImageLocation, ListingOrder};

/// The schema of the partition-id input: one non-null UInt32 per row.
pub fn partition_ids_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("partition", DataType::UInt32, false)]))
}

/// An in-memory scan with `partitions` partitions, partition `i` holding the one row `i`.
fn partition_ids(partitions: usize) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = partition_ids_schema();
    let mut batches = Vec::with_capacity(partitions);
    for i in 0..partitions {
        let Ok(id) = u32::try_from(i) else {
            return plan_err!("cliptta: {partitions} partitions is more than a listing can number");
        };
        batches.push(vec![RecordBatch::try_new(schema.clone(), vec![Arc::new(UInt32Array::from(vec![id]))])?]);
    }
    Ok(MemorySourceConfig::try_new_exec(&batches, schema, None)?)
}

/// Lists a location's objects (see the module docs).
#[derive(Debug, Clone)]
pub struct ImageListingExec {
    location: ImageLocation,
    store: Arc<dyn ObjectStore>,
    order: ListingOrder,
    partitions: usize,
    ids: Arc<dyn ExecutionPlan>,
    store_options: Vec<(String, String)>,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ImageListingExec {
    /// A listing of `location` in `store`, split into `partitions` (at least 1), each listed
    /// by its own output partition.
    pub fn try_new(location: ImageLocation, store: Arc<dyn ObjectStore>, order: ListingOrder, partitions: usize) -> Result<Self> {
        let partitions = partitions.max(1);
        let ids = partition_ids(partitions)?;
        Self::try_with_ids(location, store, order, partitions, ids)
    }

    /// A listing whose output partitions list the partition ids that `ids` (schema
    /// [`partition_ids_schema`]) yields, out of `partitions` in all: the form a decoded or
    /// task-restricted plan comes in.
    pub fn try_with_ids(
        location: ImageLocation,
        store: Arc<dyn ObjectStore>,
        order: ListingOrder,
        partitions: usize,
        ids: Arc<dyn ExecutionPlan>,
    ) -> Result<Self> {
        if partitions == 0 {
            return plan_err!("cliptta: a listing needs at least one partition");
        }
        if ids.schema().fields() != partition_ids_schema().fields() {
            return plan_err!("cliptta: the input of ImageListingExec must be one non-null UInt32 column `partition`, got {}", ids.schema());
        }
        let cache = Self::compute_properties(&ids);
        Ok(Self { location, store, order, partitions, ids, store_options: Vec::new(), cache: Arc::new(cache), metrics: ExecutionPlanMetricsSet::new() })
    }

    fn compute_properties(ids: &Arc<dyn ExecutionPlan>) -> PlanProperties {
        PlanProperties::new(
            EquivalenceProperties::new(lake_schema()),
            Partitioning::UnknownPartitioning(ids.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
    }

    /// Records the object-store keys `store` was built with, so a serialised plan can rebuild
    /// the store in another process (the store itself is a live handle and never serialised).
    pub fn with_store_options(mut self, store_options: Vec<(String, String)>) -> Self {
        self.store_options = store_options;
        self
    }

    /// The listed location.
    pub fn location(&self) -> &ImageLocation {
        &self.location
    }

    /// The listing order.
    pub fn order(&self) -> ListingOrder {
        self.order
    }

    /// The number of partitions the lake is split into (the output may hold fewer of them
    /// once a scheduler has restricted the plan to one task's share).
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// The object-store keys of [`ImageListingExec::with_store_options`].
    pub fn store_options(&self) -> &[(String, String)] {
        &self.store_options
    }
}

impl DisplayAs for ImageListingExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let order = match self.order {
            ListingOrder::Shuffle(seed) => format!("shuffle(seed={seed})"),
            ListingOrder::Listing => "listing".to_string(),
        };
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(
                    f,
                    "ImageListingExec: location={}, extensions={}, order={order}, partitions={}",
                    self.location.original(),
                    self.location.extensions(),
                    self.partitions
                )
            }
            DisplayFormatType::TreeRender => {
                writeln!(f, "location={}", self.location.original())?;
                writeln!(f, "extensions={}", self.location.extensions())?;
                writeln!(f, "order={order}")
            }
        }
    }
}

/// The partition ids in `batches`, each checked against `partitions`.
fn read_ids(batches: &[RecordBatch], partitions: usize) -> Result<Vec<usize>> {
    let mut ids = Vec::new();
    for batch in batches {
        let Some(column) = batch.columns().first().and_then(|c| c.as_primitive_opt::<UInt32Type>()) else {
            return internal_err!("ImageListingExec: partition ids must be a UInt32 column");
        };
        for id in column.iter() {
            let Some(id) = id.map(|v| v as usize) else {
                return exec_err!("cliptta: a null partition id reached ImageListingExec");
            };
            if id >= partitions {
                return exec_err!("cliptta: partition id {id} is out of range for a listing of {partitions} partitions");
            }
            ids.push(id);
        }
    }
    Ok(ids)
}

impl ExecutionPlan for ImageListingExec {
    fn name(&self) -> &str {
        "ImageListingExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.ids]
    }

    // Repartitioning the ids would only spread a handful of rows (and, on a cluster, cut a stage
    // boundary under every scan): the parallelism is the `partitions` option.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn apply_expressions(&self, _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("ImageListingExec takes one child (its partition ids), got {}", children.len());
        }
        let ids = children.swap_remove(0);
        let listing = Self::try_with_ids(self.location.clone(), self.store.clone(), self.order, self.partitions, ids)?
            .with_store_options(self.store_options.clone());
        Ok(Arc::new(listing))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let schema: SchemaRef = lake_schema();
        let batch_size = context.session_config().batch_size().max(1);
        let ids = self.ids.execute(partition, context)?;
        let (location, store, order, partitions) = (self.location.clone(), self.store.clone(), self.order, self.partitions);
        let listed = MetricBuilder::new(&self.metrics).counter("objects_listed", partition);
        let skipped = MetricBuilder::new(&self.metrics).counter("objects_skipped", partition);
        let out_schema = schema.clone();
        let batches = futures::stream::once(async move {
            let wanted = read_ids(&ids.try_collect::<Vec<_>>().await?, partitions)?;
            if wanted.is_empty() {
                return Ok(futures::stream::iter(Vec::new()));
            }
            let listing = list_objects(&store, &location, order).await?;
            let prefix = location.prefix();
            let in_partition = |m: &object_store::ObjectMeta| wanted.contains(&partition_of(prefix, &m.location, partitions));
            // Each skipped object is counted by the partition it would belong to, so the sum
            // over partitions is the lake's count.
            skipped.add(listing.skipped.iter().filter(|m| in_partition(m)).count());
            let mine: Vec<_> = listing.objects.into_iter().filter(|m| in_partition(m)).collect();
            listed.add(mine.len());
            let mut out = Vec::new();
            for chunk in mine.chunks(batch_size) {
                let urls = StringArray::from_iter_values(chunk.iter().map(|m| location.object_url(&m.location)));
                let sizes = Int64Array::from_iter_values(chunk.iter().map(|m| i64::try_from(m.size).unwrap_or(i64::MAX)));
                out.push(RecordBatch::try_new(out_schema.clone(), vec![Arc::new(urls), Arc::new(sizes)]).map_err(Into::into));
            }
            Ok::<_, datafusion::error::DataFusionError>(futures::stream::iter(out))
        })
        .map(|r| match r {
            Ok(s) => s.boxed(),
            Err(e) => futures::stream::iter(vec![Err(e)]).boxed(),
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        let schema = partition_ids_schema();
        let batch = |v: Vec<Option<u32>>| RecordBatch::try_new(schema.clone(), vec![Arc::new(UInt32Array::from(v))]);
        // A non-null schema refuses nulls at batch construction, so build the null case on a nullable one.
        let nullable = Arc::new(Schema::new(vec![Field::new("partition", DataType::UInt32, true)]));
        let with_null = RecordBatch::try_new(nullable, vec![Arc::new(UInt32Array::from(vec![Some(1), None]))]).unwrap();
        assert_eq!(read_ids(&[batch(vec![Some(2)]).unwrap(), batch(vec![Some(0)]).unwrap()], 3).unwrap(), vec![2, 0]);
        assert!(read_ids(&[batch(vec![Some(3)]).unwrap()], 3).unwrap_err().to_string().contains("out of range"));
        assert!(read_ids(&[with_null], 3).unwrap_err().to_string().contains("null partition id"));
        assert!(partition_ids(3).unwrap().output_partitioning().partition_count() == 3);
    }
}
