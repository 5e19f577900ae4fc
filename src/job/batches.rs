//! Per-batch diagnostics as Arrow rows: what `batches.parquet` holds, one row per adaptation
//! batch of every partition.
//!
//! | column | type | |
//! |---|---|---|
//! | `partition` | UInt32 | the scan's partition |
//! | `batch` | UInt64 | adaptation batch within the partition, from 0 (a resumed run goes on counting) |
//! | `rows` | UInt32 | images in the batch |
//! | `method` | Utf8 | the method |
//! | `adapted` | Boolean | false when the batch was smaller than the method needs |
//! | `steps` | UInt32 | optimisation steps taken or skipped |
//! | `loss_first` | Float32 | first step's loss (null without steps; NaN for a skipped step) |
//! | `loss_last` | Float32 | last step's loss |
//! | `loss_terms` | List<Struct<term, first, last>> | each weighted term of the loss at the first and last step |
//! | `skipped_steps` | UInt32 | steps skipped because the loss or a gradient was not finite |
//! | `mean_entropy` | Float32 | mean entropy of the final class probabilities (nats) |
//! | `marginal_entropy` | Float32 | entropy of the batch's mean class probabilities (nats) |
//! | `classes_predicted` | UInt32 | distinct classes predicted |
//! | `id_fraction` | Float32 | open set: share judged in-distribution (null in the closed set) |
//! | `threshold` | Float32 | open set: the batch's final OOD threshold (null without one) |
//! | `distance` | Float32 | LayerNorms' relative distance from the checkpoint after the batch |
//! | `seconds` | Float64 | time adapting and predicting |
//! | `guard` | Utf8 | the guard's trigger (`class_collapse`, `drift`, `non_finite`), null when quiet |
//! | `guard_action` | Utf8 | what it did (`warn`, `reset`, `stop`) |
//! | `guard_detail` | Utf8 | the numbers behind it |

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, ListArray, RecordBatch, StringArray, StructArray, UInt32Array, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use super::atomic::write_atomically;
use crate::error::{Error, Result};
use crate::tta::{BatchDiagnostics, GuardEvent};

/// The file `cliptta label` writes beside its labels.
pub const BATCHES_FILE: &str = "batches.parquet";

/// One adaptation batch of one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// The partition.
    pub partition: usize,
    /// The batch's index within the partition, from 0.
    pub batch: u64,
    /// What the adapter reported.
    pub diagnostics: BatchDiagnostics,
    /// The guard's event after the batch, if any.
    pub guard: Option<GuardEvent>,
}

fn term_fields() -> Fields {
    Fields::from(vec![
        Field::new("term", DataType::Utf8, false),
        Field::new("first", DataType::Float32, false),
        Field::new("last", DataType::Float32, false),
    ])
}

/// The schema of the diagnostics rows (the table above, in order).
pub fn batches_schema() -> SchemaRef {
    let f32n = |name: &str| Field::new(name, DataType::Float32, true);
    let utf8n = |name: &str| Field::new(name, DataType::Utf8, true);
    let terms = Field::new_list_field(DataType::Struct(term_fields()), false);
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::UInt32, false),
        Field::new("batch", DataType::UInt64, false),
        Field::new("rows", DataType::UInt32, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("adapted", DataType::Boolean, false),
        Field::new("steps", DataType::UInt32, false),
        f32n("loss_first"),
        f32n("loss_last"),
        Field::new("loss_terms", DataType::List(Arc::new(terms)), false),
        Field::new("skipped_steps", DataType::UInt32, false),
        Field::new("mean_entropy", DataType::Float32, false),
        Field::new("marginal_entropy", DataType::Float32, false),
        Field::new("classes_predicted", DataType::UInt32, false),
        f32n("id_fraction"),
        f32n("threshold"),
        Field::new("distance", DataType::Float32, false),
        Field::new("seconds", DataType::Float64, false),
        utf8n("guard"),
        utf8n("guard_action"),
        utf8n("guard_detail"),
    ]))
}

/// `records` as one record batch of [`batches_schema`].
pub fn to_record_batch(records: &[BatchRecord]) -> Result<RecordBatch> {
    let d = |f: fn(&BatchDiagnostics) -> f32| -> ArrayRef { Arc::new(records.iter().map(|r| f(&r.diagnostics)).collect::<Float32Array>()) };
    let opt = |f: fn(&BatchDiagnostics) -> Option<f32>| -> ArrayRef { Arc::new(records.iter().map(|r| f(&r.diagnostics)).collect::<Float32Array>()) };
    let u32s = |f: &dyn Fn(&BatchRecord) -> u32| -> ArrayRef { Arc::new(records.iter().map(f).collect::<UInt32Array>()) };
    let guard = |f: fn(&GuardEvent) -> String| -> ArrayRef { Arc::new(records.iter().map(|r| r.guard.as_ref().map(f)).collect::<StringArray>()) };

    let (mut names, mut firsts, mut lasts, mut offsets) = (Vec::new(), Vec::new(), Vec::new(), vec![0i32]);
    for r in records {
        for name in r.diagnostics.term_names() {
            if let Some((first, last)) = r.diagnostics.term_first_last(name) {
                names.push(name);
                firsts.push(first);
                lasts.push(last);
            }
        }
        offsets.push(names.len() as i32);
    }
    let terms = StructArray::try_new(
        term_fields(),
        vec![Arc::new(StringArray::from(names)), Arc::new(Float32Array::from(firsts)), Arc::new(Float32Array::from(lasts))],
        None,
    )?;
    let item = Arc::new(Field::new_list_field(DataType::Struct(term_fields()), false));
    let loss_terms = ListArray::try_new(item, OffsetBuffer::new(offsets.into()), Arc::new(terms), None)?;

    let columns: Vec<ArrayRef> = vec![
        u32s(&|r| r.partition as u32),
        Arc::new(records.iter().map(|r| r.batch).collect::<UInt64Array>()),
        u32s(&|r| r.diagnostics.rows as u32),
        Arc::new(records.iter().map(|r| Some(r.diagnostics.method.as_str())).collect::<StringArray>()),
        Arc::new(records.iter().map(|r| Some(r.diagnostics.adapted)).collect::<BooleanArray>()),
        u32s(&|r| r.diagnostics.steps.len() as u32),
        opt(BatchDiagnostics::loss_first),
        opt(BatchDiagnostics::loss_last),
        Arc::new(loss_terms),
        u32s(&|r| r.diagnostics.skipped_steps as u32),
        d(|d| d.mean_entropy),
        d(|d| d.marginal_entropy),
        u32s(&|r| r.diagnostics.classes_predicted as u32),
        opt(|d| d.id_fraction),
        opt(|d| d.threshold),
        d(|d| d.distance),
        Arc::new(records.iter().map(|r| r.diagnostics.seconds).collect::<Float64Array>()),
        guard(|g| g.trigger.as_str().to_string()),
        guard(|g| g.action.as_str().to_string()),
        guard(|g| g.detail.clone()),
    ];
    Ok(RecordBatch::try_new(batches_schema(), columns)?)
}

/// Writes diagnostics rows to `path` as Parquet, atomically (temp + fsync + rename).
pub fn write_batches(path: &Path, batches: &[RecordBatch]) -> Result<()> {
    let failed = |e: parquet::errors::ParquetError| Error::config(path, format!("cannot write diagnostics: {e}"));
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batches_schema(), None).map_err(failed)?;
    for batch in batches {
        writer.write(batch).map_err(failed)?;
    }
    writer.close().map_err(failed)?;
    write_atomically(path, &bytes)
}

/// Reads diagnostics rows written by [`write_batches`].
pub fn read_batches(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let failed = |e: parquet::errors::ParquetError| Error::config(path, format!("cannot read diagnostics: {e}"));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(failed)?.build().map_err(failed)?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        out.push(RecordBatch::try_new(batches_schema(), batch.columns().to_vec())?);
    }
    Ok(out)
}

/// Sorts diagnostics rows by partition, then batch (partitions finish in any order).
pub fn sort_batches(batches: &[RecordBatch]) -> Result<RecordBatch> {
    let all = arrow::compute::concat_batches(&batches_schema(), batches)?;
    let sort = |i: usize| arrow::compute::SortColumn { values: all.column(i).clone(), options: None };
    let order = arrow::compute::lexsort_to_indices(&[sort(0), sort(1)], None)?;
    let columns = all.columns().iter().map(|c| arrow::compute::take(c.as_ref(), &order, None)).collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batches_schema(), columns)?)
}

/// Rows in `batches`.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;
    use crate::tta::{GuardAction, GuardTrigger, LossTerm, Method, StepLoss};

    fn record(partition: usize, batch: u64, guard: bool) -> BatchRecord {
        let step = |l: f32| StepLoss { loss: l, terms: vec![LossTerm { name: "a", value: l - 1.0 }, LossTerm { name: "b", value: 1.0 }] };
        BatchRecord {
            partition,
            batch,
            diagnostics: BatchDiagnostics {
                method: Method::Cliptta,
                rows: 64,
                adapted: true,
                steps: vec![step(3.0), step(2.0), step(1.5)],
                skipped_steps: 0,
                mean_entropy: 0.5,
                marginal_entropy: 2.0,
                classes_predicted: 9,
                id_fraction: Some(0.75),
                threshold: Some(-2.1),
                distance: 0.01,
                seconds: 0.25,
            },
            guard: guard.then(|| GuardEvent { trigger: GuardTrigger::Drift, action: GuardAction::Warn, detail: "far".into() }),
        }
    }

    #[test]
    fn rows_round_trip_through_parquet_in_partition_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BATCHES_FILE);
        let a = to_record_batch(&[record(1, 0, false), record(1, 1, true)]).unwrap();
        let b = to_record_batch(&[record(0, 0, false)]).unwrap();
        write_batches(&path, &[sort_batches(&[a, b]).unwrap()]).unwrap();
        let back = arrow::compute::concat_batches(&batches_schema(), &read_batches(&path).unwrap()).unwrap();
        assert_eq!(back.num_rows(), 3);
        let col = |name: &str| back.column(back.schema().index_of(name).unwrap()).clone();
        let partition = col("partition");
        let partition = partition.as_any().downcast_ref::<UInt32Array>().unwrap();
        assert_eq!(partition.values().to_vec(), vec![0, 1, 1]);
        let first = col("loss_first");
        assert_eq!(first.as_any().downcast_ref::<Float32Array>().unwrap().value(0), 3.0);
        let last = col("loss_last");
        assert_eq!(last.as_any().downcast_ref::<Float32Array>().unwrap().value(0), 1.5);
        let terms = col("loss_terms");
        let terms = terms.as_any().downcast_ref::<ListArray>().unwrap().value(0);
        let terms = terms.as_any().downcast_ref::<StructArray>().unwrap();
        let names = terms.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let (f, l) = (terms.column(1).as_any().downcast_ref::<Float32Array>().unwrap(), terms.column(2).as_any().downcast_ref::<Float32Array>().unwrap());
        assert_eq!((names.value(0), f.value(0), l.value(0)), ("a", 2.0, 0.5));
        assert_eq!((names.value(1), f.value(1), l.value(1)), ("b", 1.0, 1.0));
        let guard = col("guard");
        let guard = guard.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((guard.is_null(0), guard.is_null(1), guard.value(2)), (true, true, "drift"));
    }

    #[test]
    fn the_column_docs_match_the_schema() {
        let docs: Vec<String> = include_str!("batches.rs")
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .filter_map(|l| l.strip_prefix("//! | `").and_then(|r| r.split('`').next()).map(str::to_string))
            .collect();
        let fields: Vec<String> = batches_schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(docs, fields);
    }
}
