//! Refetching a checkpoint's `fetch_error` rows when the job runs again: a store that was down
//! during the first run need not leave holes in the labels. Only those rows are fetched; each is
//! labelled by the adapter state of the last commit, without adapting on it, and put back in its
//! place, so the committed rows keep their order and count.

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{interleave_record_batch, take_record_batch};
use datafusion::common::Result;

use super::schema::PredictionColumn;
use crate::RowStatus;

/// The rows of a committed output batch whose status is `fetch_error`.
pub fn fetch_error_rows(batch: &RecordBatch) -> Vec<usize> {
    let Some(status) = batch.column_by_name(PredictionColumn::Status.field().name()).and_then(|c| c.as_string_opt::<i32>()) else {
        return Vec::new();
    };
    (0..status.len()).filter(|&i| status.is_valid(i) && status.value(i) == RowStatus::FetchError.as_str()).collect()
}

/// The input columns (the first `input_columns` of an output batch) of `rows`, as a chunk the
/// loader can fetch again.
pub fn input_rows(batch: &RecordBatch, input_columns: usize, rows: &[usize]) -> Result<RecordBatch> {
    let projected = batch.project(&(0..input_columns).collect::<Vec<_>>())?;
    let indices = UInt32Array::from_iter_values(rows.iter().map(|&r| r as u32));
    Ok(take_record_batch(&projected, &indices)?)
}

/// `batch` with row `rows[j]` replaced by row `j` of `redone` (same schema).
pub fn put_back(batch: &RecordBatch, redone: &RecordBatch, rows: &[usize]) -> Result<RecordBatch> {
    let mut from = vec![(0usize, 0usize); batch.num_rows()];
    for (i, slot) in from.iter_mut().enumerate() {
        *slot = (0, i);
    }
    for (j, &row) in rows.iter().enumerate() {
        from[row] = (1, j);
    }
    Ok(interleave_record_batch(&[batch, redone], &from)?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn finds_and_puts_back_rows() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false), Field::new("status", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int32Array::from(vec![1, 2, 3, 4])), Arc::new(StringArray::from(vec!["ok", "fetch_error", "decode_error", "fetch_error"]))],
        )
        .unwrap();
        let rows = fetch_error_rows(&batch);
        assert_eq!(rows, [1, 3]);
        assert_eq!(input_rows(&batch, 1, &rows).unwrap().column(0).as_primitive::<arrow::datatypes::Int32Type>().values(), &[2, 4]);
        let redone = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![2, 4])), Arc::new(StringArray::from(vec!["ok", "ok"]))]).unwrap();
        let merged = put_back(&batch, &redone, &rows).unwrap();
        let status: Vec<&str> = merged.column(1).as_string::<i32>().iter().flatten().collect();
        assert_eq!(status, ["ok", "ok", "decode_error", "ok"]);
    }
}
