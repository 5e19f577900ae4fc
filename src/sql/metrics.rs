//! `ClipTtaMetrics`: what one partition of a `ClipTtaExec` did, visible in `EXPLAIN ANALYZE`.

use datafusion::physical_plan::metrics::{BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, Time};

use crate::RowStatus;


/// Metrics of one partition: DataFusion's baseline (output rows, elapsed compute) plus
/// cliptta's counters and timers.
#[derive(Debug, Clone)]
pub struct ClipTtaMetrics {
    /// Output rows and elapsed compute.
    pub baseline: BaselineMetrics,
    /// Rows predicted (`status = ok`).
    pub rows_ok: Count,
    /// Rows failed, one counter per status in [`RowStatus::failures`] order, named
    /// `rows_failed_<reason>` (EXPLAIN ANALYZE sums labelled counters, so the reason is in the
    /// name).
    pub rows_failed: Vec<Count>,
    /// Adaptation batches run.
    pub adapt_batches: Count,
    /// Rows read back from a checkpoint's committed parts instead of computed.
    pub rows_resumed: Count,
    /// Rows of a checkpoint's `fetch_error` rows fetched again when the job ran again.
    pub rows_refetched: Count,
    /// Checkpoint commits made.
    pub commits: Count,
    /// Time committing (part file, adapter state, manifest, fsyncs), which the stream waits for.
    pub commit_time: Time,
    /// Time fetching bytes from the store (summed over concurrent fetches).
    pub fetch_time: Time,
    /// Time decoding image bytes to pixels (summed over blocking threads).
    pub decode_time: Time,
    /// Time resizing, cropping and normalising decoded images (summed over blocking threads).
    pub preprocess_time: Time,
    /// Time in `Adapter::adapt_and_predict`.
    pub adapt_time: Time,
    /// Time loading the model and building the adapter.
    pub load_time: Time,
}

impl ClipTtaMetrics {
    /// Registers the metrics of `partition` in `metrics`.
    pub fn new(metrics: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        Self {
            baseline: BaselineMetrics::new(metrics, partition),
            rows_ok: MetricBuilder::new(metrics).counter("rows_ok", partition),
            rows_failed: RowStatus::failures()
                .iter()
                .map(|status| MetricBuilder::new(metrics).counter(format!("rows_failed_{status}"), partition))
                .collect(),
            adapt_batches: MetricBuilder::new(metrics).counter("adapt_batches", partition),
            rows_resumed: MetricBuilder::new(metrics).counter("rows_resumed", partition),
            rows_refetched: MetricBuilder::new(metrics).counter("rows_refetched", partition),
            commits: MetricBuilder::new(metrics).counter("commits", partition),
            commit_time: MetricBuilder::new(metrics).subset_time("commit_time", partition),
            fetch_time: MetricBuilder::new(metrics).subset_time("fetch_time", partition),
            decode_time: MetricBuilder::new(metrics).subset_time("decode_time", partition),
            preprocess_time: MetricBuilder::new(metrics).subset_time("preprocess_time", partition),
            adapt_time: MetricBuilder::new(metrics).subset_time("adapt_time", partition),
            load_time: MetricBuilder::new(metrics).subset_time("load_time", partition),
        }
    }

    /// Counts one finished row.
    pub fn record(&self, status: RowStatus) {
        match RowStatus::failures().iter().position(|s| *s == status) {
            Some(i) => self.rows_failed[i].add(1),
            None => self.rows_ok.add(1),
        }
    }

    /// Rows finished: predicted, failed, or read back from a checkpoint.
    pub fn rows_done(&self) -> usize {
        self.rows_ok.value() + self.rows_failed_total() + self.rows_resumed.value()
    }

    /// Failed rows over all reasons.
    pub fn rows_failed_total(&self) -> usize {
        self.rows_failed.iter().map(Count::value).sum()
    }
}
