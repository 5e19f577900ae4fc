//! `ImageListingExec`: the leaf of a lake scan. Lists a location's objects lazily at execution
//! (in the seeded order), keeps those whose stable path hash falls in the partition
//! ([`partition_of`]: the same split on every run and every process, which a cluster needs), and
//! emits `location` (object URL) and `size` columns; `ClipTtaExec` fetches the bytes.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use object_store::ObjectStore;

use super::schema::lake_schema;
use crate::source::{list_objects, partition_of, ImageLocation, ListingOrder};

/// Lists a location's objects (see the module docs).
#[derive(Debug, Clone)]
pub struct ImageListingExec {
    location: ImageLocation,
    store: Arc<dyn ObjectStore>,
    order: ListingOrder,
    partitions: usize,
    store_options: Vec<(String, String)>,
    cache: Arc<PlanProperties>,
}

impl ImageListingExec {
    /// A listing of `location` in `store`.
    pub fn new(location: ImageLocation, store: Arc<dyn ObjectStore>, order: ListingOrder, partitions: usize) -> Self {
        let partitions = partitions.max(1);
        let cache = PlanProperties::new(
            EquivalenceProperties::new(lake_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self { location, store, order, partitions, store_options: Vec::new(), cache: Arc::new(cache) }
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

    /// The number of partitions.
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
                write!(f, "ImageListingExec: location={}, order={order}, partitions={}", self.location.original(), self.partitions)
            }
            DisplayFormatType::TreeRender => {
                writeln!(f, "location={}", self.location.original())?;
                writeln!(f, "order={order}")
            }
        }
    }
}

impl ExecutionPlan for ImageListingExec {
    fn name(&self) -> &str {
        "ImageListingExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(&self, _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("ImageListingExec takes no children");
        }
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let schema: SchemaRef = lake_schema();
        let batch_size = context.session_config().batch_size().max(1);
        let (location, store, order, partitions) = (self.location.clone(), self.store.clone(), self.order, self.partitions);
        let out_schema = schema.clone();
        let batches = futures::stream::once(async move {
            let objects = list_objects(&store, &location, order).await?;
            let prefix = location.prefix();
            let mine: Vec<_> = objects.into_iter().filter(|m| partition_of(prefix, &m.location, partitions) == partition).collect();
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
