//! `ClipTtaMetrics`: what one partition of a `ClipTtaExec` did, visible in `EXPLAIN ANALYZE`.

use std::any::Any;
use std::sync::{Arc, Mutex, PoisonError};

use datafusion::physical_plan::metrics::{BaselineMetrics, Count, CustomMetricValue, ExecutionPlanMetricsSet, MetricBuilder, MetricValue, Time};

use crate::tta::{BatchDiagnostics, GuardEvent};
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
    /// The adaptation batches in one line (`adaptation` in EXPLAIN ANALYZE).
    pub adaptation: Arc<AdaptationSummary>,
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
            adaptation: {
                let summary = Arc::new(AdaptationSummary::default());
                let value = MetricValue::Custom { name: "adaptation".into(), value: summary.clone() };
                MetricBuilder::new(metrics).with_partition(partition).build(value);
                summary
            },
        }
    }

    /// Counts one finished row.
    pub fn record(&self, status: RowStatus) {
        match RowStatus::failures().iter().position(|s| *s == status) {
            Some(i) => self.rows_failed[i].add(1),
            None => self.rows_ok.add(1),
        }
    }

    /// The [`AdaptationSummary`] of several partitions, as EXPLAIN ANALYZE prints it.
    pub fn adaptation_summary(partitions: &[ClipTtaMetrics]) -> String {
        let total = AdaptationSummary::default();
        for m in partitions {
            total.aggregate(m.adaptation.clone());
        }
        total.to_string()
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

/// Totals over adaptation batches, shown by EXPLAIN ANALYZE as one line: batches, mean first
/// and last loss, mean prediction entropy, fewest classes predicted in a batch, largest
/// distance from the checkpoint, guard events. Summed over partitions when aggregated.
#[derive(Debug, Default)]
pub struct AdaptationSummary(Mutex<Totals>);

#[derive(Debug, Default, Clone, PartialEq)]
struct Totals {
    batches: usize,
    with_loss: usize,
    loss_first: f64,
    loss_last: f64,
    entropy: f64,
    min_classes: Option<usize>,
    max_distance: f32,
    guard_events: usize,
}

impl Totals {
    fn merge(&mut self, o: &Totals) {
        self.batches += o.batches;
        self.with_loss += o.with_loss;
        self.loss_first += o.loss_first;
        self.loss_last += o.loss_last;
        self.entropy += o.entropy;
        self.min_classes = match (self.min_classes, o.min_classes) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max_distance = self.max_distance.max(o.max_distance);
        self.guard_events += o.guard_events;
    }
}

impl AdaptationSummary {
    /// Adds one batch.
    pub fn add(&self, d: &BatchDiagnostics, guard: Option<&GuardEvent>) {
        let mut t = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut one = Totals { batches: 1, entropy: d.mean_entropy as f64, min_classes: Some(d.classes_predicted), max_distance: d.distance, ..Totals::default() };
        if let (Some(first), Some(last)) = (d.loss_first(), d.loss_last()) {
            if first.is_finite() && last.is_finite() {
                (one.with_loss, one.loss_first, one.loss_last) = (1, first as f64, last as f64);
            }
        }
        one.guard_events = usize::from(guard.is_some());
        t.merge(&one);
    }

    /// Guard events so far.
    pub fn guard_events(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).guard_events
    }

    fn totals(&self) -> Totals {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl std::fmt::Display for AdaptationSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.totals();
        write!(f, "batches={}", t.batches)?;
        if t.with_loss > 0 {
            let n = t.with_loss as f64;
            write!(f, " loss={:.4}->{:.4}", t.loss_first / n, t.loss_last / n)?;
        }
        if t.batches > 0 {
            write!(f, " entropy={:.3}", t.entropy / t.batches as f64)?;
        }
        if let Some(c) = t.min_classes {
            write!(f, " classes_min={c}")?;
        }
        write!(f, " distance_max={:.4} guard_events={}", t.max_distance, t.guard_events)
    }
}

impl CustomMetricValue for AdaptationSummary {
    fn new_empty(&self) -> Arc<dyn CustomMetricValue> {
        Arc::new(Self::default())
    }

    fn aggregate(&self, other: Arc<dyn CustomMetricValue>) {
        if let Some(o) = other.as_any().downcast_ref::<Self>() {
            let o = o.totals();
            self.0.lock().unwrap_or_else(PoisonError::into_inner).merge(&o);
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_usize(&self) -> usize {
        self.totals().batches
    }

    fn is_eq(&self, other: &Arc<dyn CustomMetricValue>) -> bool {
        other.as_any().downcast_ref::<Self>().is_some_and(|o| o.totals() == self.totals())
    }
}
