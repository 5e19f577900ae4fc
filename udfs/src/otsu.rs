//! `otsu_threshold(score)`: Otsu's threshold of a group of scores.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{internal_datafusion_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use crate::common::{
    as_f64s, check_arity, coerce_number, f64_result, for_each_list, list_scalar, list_state_field,
};

use crate::kernels::otsu::*;

/// SQL aggregate `otsu_threshold(score) -> DOUBLE`, see [`otsu_threshold()`].
///
/// Use it to split a group of scores in two without choosing a cut-off by hand, e.g. to tell
/// in-distribution images from outliers by their confidence. `score` is any numeric type;
/// nulls and non-finite values are skipped; an empty group gives null.
///
/// ```sql
/// SELECT otsu_threshold(score) AS threshold
/// FROM (VALUES (0.1), (0.2), (0.3), (0.7), (0.8), (0.9)) AS t(score);
/// -- +-----------+
/// -- | threshold |
/// -- +-----------+
/// -- | 0.2984375 |
/// -- +-----------+
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct OtsuThreshold {
    signature: Signature,
}

impl OtsuThreshold {
    /// Creates the function; register it with `ctx.register_udaf(AggregateUDF::from(OtsuThreshold::new()))`.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for OtsuThreshold {
    fn default() -> Self {
        Self::new()
    }
}

impl AggregateUDFImpl for OtsuThreshold {
    fn name(&self) -> &str {
        "otsu_threshold"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        check_arity(name, "1 argument: otsu_threshold(score)", arg_types, 1, 1)?;
        Ok(vec![coerce_number(name, "score", &arg_types[0])?])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![list_state_field(
            args.name,
            "values",
            DataType::Float64,
        )])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OtsuAccumulator::default()))
    }
}

/// Keeps every finite value of a group: the histogram range is only known once all values
/// are in, so partial histograms could not be merged.
#[derive(Debug, Default)]
struct OtsuAccumulator {
    values: Vec<f64>,
}

impl OtsuAccumulator {
    fn push(&mut self, array: &ArrayRef) -> Result<()> {
        let array = as_f64s("otsu_threshold", array)?;
        self.values
            .extend(array.iter().flatten().filter(|v| v.is_finite()));
        Ok(())
    }
}

impl Accumulator for OtsuAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values
            .first()
            .ok_or_else(|| internal_datafusion_err!("otsu_threshold: missing input column"))?;
        self.push(values)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let state = states
            .first()
            .ok_or_else(|| internal_datafusion_err!("otsu_threshold: missing state column"))?;
        for_each_list("otsu_threshold", state, |inner| self.push(&inner))
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values = Float64Array::from(std::mem::take(&mut self.values));
        Ok(vec![list_scalar(Arc::new(values))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(f64_result(otsu_threshold(&self.values)))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.values.capacity() * size_of::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_two_clusters() {
        let values = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9];
        let t = otsu_threshold(&values).unwrap_or(f64::NAN);
        assert!(t > 0.2 && t < 0.7, "{t}");
        // A bin centre: min + (k + 1/2) * (max - min) / 256 for some k.
        let k = (t - 0.1) / (0.8 / 256.0) - 0.5;
        assert!((k - k.round()).abs() < 1e-9, "{k}");
    }

    #[test]
    fn all_equal_returns_the_value() {
        assert_eq!(otsu_threshold(&[2.5]), Some(2.5));
        assert_eq!(otsu_threshold(&[-1.0, -1.0, -1.0]), Some(-1.0));
        assert_eq!(otsu_threshold(&[7.0, f64::NAN, 7.0]), Some(7.0));
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let with = otsu_threshold(&[0.0, 1.0, f64::INFINITY, 0.1, f64::NAN, 0.9]);
        let without = otsu_threshold(&[0.0, 1.0, 0.1, 0.9]);
        assert_eq!(with, without);
        assert_eq!(otsu_threshold(&[f64::NAN, f64::INFINITY]), None);
    }

    #[test]
    fn edges_follow_numpy() {
        let edges = bin_edges(0.0, 1.0, 4);
        assert_eq!(edges, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        // Half-open bins, except the last which includes the maximum.
        assert_eq!(bin_index(0.25, 0.0, 1.0, &edges), 1);
        assert_eq!(bin_index(0.2499, 0.0, 1.0, &edges), 0);
        assert_eq!(bin_index(1.0, 0.0, 1.0, &edges), 3);
        assert_eq!(bin_index(0.0, 0.0, 1.0, &edges), 0);
    }

    #[test]
    fn order_does_not_matter() {
        let values = [0.5, 0.1, 0.9, 0.33, 0.2, 0.8, 0.75, 0.05];
        let mut reversed = values;
        reversed.reverse();
        assert_eq!(otsu_threshold(&values), otsu_threshold(&reversed));
    }
}
