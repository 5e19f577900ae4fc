//! `auroc(score, is_positive)`: area under the ROC curve.

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use crate::common::{check_arity, coerce_label, coerce_number, f64_result, ScoredLabels};

use crate::kernels::auroc::*;

/// SQL aggregate `auroc(score, is_positive) -> DOUBLE`, see [`auroc()`].
///
/// `score` is any numeric type; `is_positive` is a boolean (or integer, non-zero meaning
/// positive). Rows with a null in either argument or a NaN score are skipped. The result is
/// null for an empty group or a group without both classes.
///
/// ```sql
/// SELECT auroc(score, label) AS auroc
/// FROM (VALUES (0.1, false), (0.4, false), (0.35, true), (0.8, true)) AS t(score, label);
/// -- +-------+
/// -- | auroc |
/// -- +-------+
/// -- | 0.75  |
/// -- +-------+
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Auroc {
    signature: Signature,
}

impl Auroc {
    /// Creates the function; register it with `ctx.register_udaf(AggregateUDF::from(Auroc::new()))`.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for Auroc {
    fn default() -> Self {
        Self::new()
    }
}

impl AggregateUDFImpl for Auroc {
    fn name(&self) -> &str {
        "auroc"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        check_arity(
            name,
            "2 arguments: auroc(score, is_positive)",
            arg_types,
            2,
            2,
        )?;
        Ok(vec![
            coerce_number(name, "score", &arg_types[0])?,
            coerce_label(name, "is_positive", &arg_types[1])?,
        ])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(ScoredLabels::state_fields(args.name))
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(AurocAccumulator::default()))
    }
}

/// Collects every `(score, label)` pair of a group; see [`ScoredLabels`].
#[derive(Debug, Default)]
struct AurocAccumulator {
    values: ScoredLabels,
}

impl Accumulator for AurocAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.values.update("auroc", values)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.values.merge("auroc", states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.values.state())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(f64_result(auroc(&self.values.scores, &self.values.labels)))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.values.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_inverted_rankings() {
        assert_eq!(
            auroc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            auroc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
    }

    #[test]
    fn ties_count_one_half() {
        // One positive tied with one of two negatives, above the other: (1 + 0.5) / 2.
        assert_eq!(auroc(&[0.5, 0.5, 0.1], &[true, false, false]), Some(0.75));
        // Everything tied: chance level.
        assert_eq!(
            auroc(&[1.0; 6], &[true, false, true, false, false, true]),
            Some(0.5)
        );
        // Signed zeros are the same score.
        assert_eq!(auroc(&[-0.0, 0.0], &[true, false]), Some(0.5));
    }

    #[test]
    fn order_does_not_matter() {
        let scores = [0.3, 0.1, 0.7, 0.7, 0.2, 0.9, 0.3];
        let labels = [true, false, false, true, true, true, false];
        let expected = auroc(&scores, &labels);
        let mut rev_scores = scores;
        let mut rev_labels = labels;
        rev_scores.reverse();
        rev_labels.reverse();
        assert_eq!(auroc(&rev_scores, &rev_labels), expected);
    }

    #[test]
    fn undefined_cases() {
        assert_eq!(auroc(&[], &[]), None);
        assert_eq!(auroc(&[0.1, 0.2], &[false, false]), None);
        assert_eq!(auroc(&[0.1, 0.2], &[true]), None);
        // NaN scores are dropped, which may leave a single class.
        assert_eq!(
            auroc(&[f64::NAN, 0.2, 0.1], &[false, true, false]),
            Some(1.0)
        );
        assert_eq!(auroc(&[f64::NAN, 0.2], &[false, true]), None);
    }

    #[test]
    fn infinities_are_ordinary_scores() {
        assert_eq!(
            auroc(&[f64::NEG_INFINITY, f64::INFINITY], &[false, true]),
            Some(1.0)
        );
    }
}
