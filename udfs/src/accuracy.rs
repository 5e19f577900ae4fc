//! `accuracy(predicted, actual)`: fraction of rows where the prediction equals the label.

use arrow::array::{Array, ArrayRef, AsArray, UInt64Array};
use arrow::compute::kernels::cmp::eq;
use arrow::datatypes::{DataType, Field, FieldRef, UInt64Type};
use datafusion::common::{internal_datafusion_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use std::sync::Arc;

use crate::common::{check_arity, f64_result};

#[cfg(test)]
use crate::kernels::accuracy::*;

/// SQL aggregate `accuracy(predicted, actual) -> DOUBLE`, see [`accuracy()`].
///
/// The two arguments may be of any types SQL can compare with `=` (class names, class
/// indices, booleans); they are coerced to a common type as `predicted = actual` would be.
/// Rows where either is null are skipped; an empty group gives null.
///
/// ```sql
/// SELECT accuracy(predicted, actual) AS accuracy
/// FROM (VALUES ('cat', 'cat'), ('dog', 'cat'), ('dog', 'dog'), (NULL, 'dog')) AS t(predicted, actual);
/// -- +--------------------+
/// -- | accuracy           |
/// -- +--------------------+
/// -- | 0.6666666666666666 |
/// -- +--------------------+
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Accuracy {
    signature: Signature,
}

impl Accuracy {
    /// Creates the function; register it with `ctx.register_udaf(AggregateUDF::from(Accuracy::new()))`.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for Accuracy {
    fn default() -> Self {
        Self::new()
    }
}

impl AggregateUDFImpl for Accuracy {
    fn name(&self) -> &str {
        "accuracy"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        check_arity(
            name,
            "2 arguments: accuracy(predicted, actual)",
            arg_types,
            2,
            2,
        )?;
        let (predicted, actual) = (&arg_types[0], &arg_types[1]);
        match comparison_coercion(predicted, actual) {
            // Untyped NULLs on both sides: any comparable type will do, and Null is not one.
            Some(DataType::Null) => Ok(vec![DataType::Boolean, DataType::Boolean]),
            Some(common) => Ok(vec![common.clone(), common]),
            None => {
                plan_err!("{name}: cannot compare predicted ({predicted}) with actual ({actual})")
            }
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        // Counts add up exactly across partitions, so no list state is needed here.
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "correct"),
                DataType::UInt64,
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "total"),
                DataType::UInt64,
                true,
            )),
        ])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(AccuracyAccumulator::default()))
    }
}

/// Counts compared rows and correct ones.
#[derive(Debug, Default)]
struct AccuracyAccumulator {
    correct: u64,
    total: u64,
}

fn u64s(array: &ArrayRef) -> Result<&UInt64Array> {
    array.as_primitive_opt::<UInt64Type>().ok_or_else(|| {
        internal_datafusion_err!("accuracy: expected UInt64 state, got {}", array.data_type())
    })
}

impl Accumulator for AccuracyAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [predicted, actual, ..] = values else {
            return Err(internal_datafusion_err!(
                "accuracy: expected two input columns"
            ));
        };
        // Null where either side is null, so those rows drop out of both counts.
        let equal = eq(predicted, actual)?;
        self.total += (equal.len() - equal.null_count()) as u64;
        self.correct += equal.true_count() as u64;
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [correct, total, ..] = states else {
            return Err(internal_datafusion_err!(
                "accuracy: expected two state columns"
            ));
        };
        self.correct += u64s(correct)?.iter().flatten().sum::<u64>();
        self.total += u64s(total)?.iter().flatten().sum::<u64>();
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::from(self.correct),
            ScalarValue::from(self.total),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let accuracy = (self.total > 0).then(|| self.correct as f64 / self.total as f64);
        Ok(f64_result(accuracy))
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn plain_function() {
        assert_eq!(accuracy(&[1, 2, 3, 4], &[1, 2, 0, 0]), Some(0.5));
        assert_eq!(accuracy(&[1], &[1, 2]), None);
    }

    #[test]
    fn accumulator_skips_nulls_and_merges() {
        let mut a = AccuracyAccumulator::default();
        let predicted: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            Some("b"),
            None,
            Some("c"),
        ]));
        let actual: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            Some("a"),
            Some("c"),
            None,
        ]));
        assert!(a.update_batch(&[predicted, actual]).is_ok());
        assert_eq!((a.correct, a.total), (1, 2));

        let mut b = AccuracyAccumulator::default();
        let predicted: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        assert!(b.update_batch(&[predicted.clone(), predicted]).is_ok());
        let state = b.state().unwrap_or_default();
        let state: Vec<ArrayRef> = state.iter().filter_map(|s| s.to_array().ok()).collect();
        assert!(a.merge_batch(&state).is_ok());
        assert_eq!(a.evaluate().ok(), Some(ScalarValue::Float64(Some(0.75))));
    }

    #[test]
    fn empty_is_null() {
        let mut a = AccuracyAccumulator::default();
        assert_eq!(a.evaluate().ok(), Some(ScalarValue::Float64(None)));
    }

    #[test]
    fn incomparable_types_fail_planning_with_the_name() {
        let err = Accuracy::new().coerce_types(&[DataType::Boolean, DataType::Date32]);
        let msg = err.map(|_| String::new()).unwrap_or_else(|e| e.to_string());
        assert!(msg.contains("accuracy"), "{msg}");
        let err = Accuracy::new().coerce_types(&[DataType::Utf8]);
        let msg = err.map(|_| String::new()).unwrap_or_else(|e| e.to_string());
        assert!(
            msg.contains("accuracy") && msg.contains("2 arguments"),
            "{msg}"
        );
    }
}
