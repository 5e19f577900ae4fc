//! `ece(confidence, correct[, bins])`: expected calibration error.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, UInt64Array};
use arrow::datatypes::{DataType, FieldRef, UInt64Type};
use datafusion::common::{exec_err, internal_datafusion_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use crate::common::{
    as_bools, as_f64s, check_arity, coerce_label, coerce_number, f64_result, for_each_list,
    list_scalar, list_state_field, literal_arg,
};

use crate::kernels::ece::*;

/// SQL aggregate `ece(confidence, correct[, bins]) -> DOUBLE`, see [`ece()`].
///
/// `confidence` is any numeric type with values in `[0, 1]` (a value outside is an error, as
/// it means the column is not a probability); `correct` is a boolean (or integer, non-zero
/// meaning correct); `bins`, a constant between 1 and [`ECE_MAX_BINS`], defaults to
/// [`ECE_DEFAULT_BINS`]. Rows with a null in either column or a NaN confidence are skipped;
/// an empty group gives null.
///
/// ```sql
/// SELECT ece(confidence, predicted = actual) AS ece, ece(confidence, predicted = actual, 1) AS ece1
/// FROM (VALUES (0.9, 'cat', 'cat'), (0.8, 'dog', 'cat'), (0.6, 'dog', 'dog'), (0.3, 'cat', 'dog'))
///   AS t(confidence, predicted, actual);
/// -- +-----+---------------------+
/// -- | ece | ece1                |
/// -- +-----+---------------------+
/// -- | 0.4 | 0.15000000000000002 |
/// -- +-----+---------------------+
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Ece {
    signature: Signature,
}

impl Ece {
    /// Creates the function; register it with `ctx.register_udaf(AggregateUDF::from(Ece::new()))`.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for Ece {
    fn default() -> Self {
        Self::new()
    }
}

const USAGE: &str = "2 or 3 arguments: ece(confidence, correct[, bins])";

impl AggregateUDFImpl for Ece {
    fn name(&self) -> &str {
        "ece"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        check_arity(name, USAGE, arg_types, 2, 3)?;
        let mut coerced = vec![
            coerce_number(name, "confidence", &arg_types[0])?,
            coerce_label(name, "correct", &arg_types[1])?,
        ];
        if let Some(bins) = arg_types.get(2) {
            if !bins.is_integer() {
                return plan_err!("{name}: bins must be an integer constant, got {bins}");
            }
            coerced.push(DataType::Int64);
        }
        Ok(coerced)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            list_state_field(args.name, "counts", DataType::UInt64),
            list_state_field(args.name, "confidence_sums", DataType::Float64),
            list_state_field(args.name, "correct_counts", DataType::UInt64),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let bins = if args.exprs.len() < 3 {
            ECE_DEFAULT_BINS
        } else {
            match literal_arg(&args, 2) {
                Some(ScalarValue::Int64(Some(b))) if (1..=ECE_MAX_BINS as i64).contains(b) => {
                    *b as usize
                }
                Some(other) => {
                    return plan_err!("ece: bins must be between 1 and {ECE_MAX_BINS}, got {other}")
                }
                None => return plan_err!("ece: bins must be a constant, e.g. 15"),
            }
        };
        Ok(Box::new(EceAccumulator {
            totals: BinTotals::new(bins),
        }))
    }
}

/// Accumulates per-bin totals; the state is the three per-bin lists.
#[derive(Debug)]
struct EceAccumulator {
    totals: BinTotals,
}

/// Reads one `UInt64` list of per-bin totals from the state, checking it has one entry per bin.
fn u64_bins(array: &ArrayRef, bins: usize) -> Result<&UInt64Array> {
    let values = array.as_primitive_opt::<UInt64Type>().ok_or_else(|| {
        internal_datafusion_err!("ece: expected UInt64 state, got {}", array.data_type())
    })?;
    if values.len() != bins || values.null_count() > 0 {
        return Err(internal_datafusion_err!(
            "ece: state has {} bins, expected {bins}",
            values.len()
        ));
    }
    Ok(values)
}

impl Accumulator for EceAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [confidences, correct, ..] = values else {
            return Err(internal_datafusion_err!("ece: expected two input columns"));
        };
        let confidences = as_f64s("ece", confidences)?;
        let correct = as_bools("ece", correct)?;
        for (confidence, correct) in confidences.iter().zip(correct.iter()) {
            if let (Some(confidence), Some(correct)) = (confidence, correct) {
                if confidence.is_nan() {
                    continue;
                }
                if let Err(OutOfRange(v)) = self.totals.add(confidence, correct) {
                    return exec_err!("ece: confidence {v} is outside [0, 1]");
                }
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [counts, confidence_sums, correct_counts, ..] = states else {
            return Err(internal_datafusion_err!(
                "ece: expected three state columns"
            ));
        };
        let bins = self.totals.counts.len();
        let mut parts: [Vec<ArrayRef>; 3] = Default::default();
        for (state, part) in [counts, confidence_sums, correct_counts]
            .into_iter()
            .zip(parts.iter_mut())
        {
            for_each_list("ece", state, |inner| {
                part.push(inner);
                Ok(())
            })?;
        }
        let [counts, confidence_sums, correct_counts] = parts;
        if counts.len() != confidence_sums.len() || counts.len() != correct_counts.len() {
            return Err(internal_datafusion_err!("ece: mismatched state columns"));
        }
        for ((counts, sums), correct) in counts.iter().zip(&confidence_sums).zip(&correct_counts) {
            let counts = u64_bins(counts, bins)?;
            let correct = u64_bins(correct, bins)?;
            let sums = as_f64s("ece", sums)?;
            if sums.len() != bins || sums.null_count() > 0 {
                return Err(internal_datafusion_err!(
                    "ece: state has {} bins, expected {bins}",
                    sums.len()
                ));
            }
            for bin in 0..bins {
                self.totals.counts[bin] += counts.value(bin);
                self.totals.confidence_sums[bin] += sums.value(bin);
                self.totals.correct_counts[bin] += correct.value(bin);
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let t = &self.totals;
        Ok(vec![
            list_scalar(Arc::new(UInt64Array::from(t.counts.clone()))),
            list_scalar(Arc::new(Float64Array::from(t.confidence_sums.clone()))),
            list_scalar(Arc::new(UInt64Array::from(t.correct_counts.clone()))),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(f64_result(self.totals.ece()))
    }

    fn size(&self) -> usize {
        let t = &self.totals;
        size_of_val(self)
            + t.upper_edges.capacity() * size_of::<f64>()
            + t.counts.capacity() * size_of::<u64>()
            + t.confidence_sums.capacity() * size_of::<f64>()
            + t.correct_counts.capacity() * size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfectly_calibrated_is_zero() {
        // Confidence 0.5 everywhere, half correct.
        assert_eq!(ece(&[0.5; 4], &[true, false, true, false], 15), Some(0.0));
        // Confidence 1 and always right.
        assert_eq!(ece(&[1.0, 1.0], &[true, true], 15), Some(0.0));
    }

    #[test]
    fn weights_bins_by_their_share() {
        // Bin (0.8, 0.9]: conf 0.85, acc 1 -> gap 0.15, share 1/2.
        // Bin (0.2, 0.3]: conf 0.25, acc 1 -> gap 0.75, share 1/2.
        let v = ece(&[0.85, 0.25], &[true, true], 10).unwrap_or(f64::NAN);
        assert!((v - 0.45).abs() < 1e-12, "{v}");
    }

    #[test]
    fn edges_are_right_closed_with_zero_in_the_first_bin() {
        let totals = |confidences: &[f64]| {
            let mut t = BinTotals::new(5);
            for &c in confidences {
                assert!(t.add(c, true).is_ok());
            }
            t.counts
        };
        assert_eq!(totals(&[0.0, 0.2]), vec![2, 0, 0, 0, 0]);
        assert_eq!(totals(&[0.2000001, 0.4, 1.0]), vec![0, 2, 0, 0, 1]);
        // The edge 3 * 0.2 rounds above the literal 0.6, so 0.6 stays in the third bin, as in NumPy.
        assert_eq!(totals(&[0.6]), vec![0, 0, 1, 0, 0]);
    }

    #[test]
    fn invalid_inputs() {
        assert_eq!(ece(&[1.5], &[true], 15), None);
        assert_eq!(ece(&[-0.1], &[true], 15), None);
        assert_eq!(ece(&[0.5], &[true], 0), None);
        assert_eq!(ece(&[0.5], &[true, false], 15), None);
        assert_eq!(ece(&[f64::NAN], &[true], 15), None);
    }
}
