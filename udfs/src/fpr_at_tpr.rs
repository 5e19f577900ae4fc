//! `fpr_at_tpr(score, is_positive, target_tpr)`: false-positive rate at a given true-positive
//! rate, e.g. the FPR95 of out-of-distribution detection.

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use crate::common::{
    check_arity, coerce_label, coerce_number, f64_result, literal_arg, ScoredLabels,
};

use crate::kernels::fpr_at_tpr::*;

/// SQL aggregate `fpr_at_tpr(score, is_positive, target_tpr) -> DOUBLE`, see [`fpr_at_tpr()`].
///
/// `score` is any numeric type; `is_positive` is a boolean (or integer, non-zero meaning
/// positive); `target_tpr` must be a constant in `[0, 1]`. Rows with a null in either of the
/// first two arguments or a NaN score are skipped. The result is null for an empty group or a
/// group without both classes.
///
/// ```sql
/// SELECT fpr_at_tpr(score, label, 0.95) AS fpr95
/// FROM (VALUES (0.9, true), (0.8, true), (0.7, false), (0.6, true), (0.6, false), (0.2, false))
///   AS t(score, label);
/// -- +--------------------+
/// -- | fpr95              |
/// -- +--------------------+
/// -- | 0.6166666666666666 |
/// -- +--------------------+
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FprAtTpr {
    signature: Signature,
}

impl FprAtTpr {
    /// Creates the function; register it with `ctx.register_udaf(AggregateUDF::from(FprAtTpr::new()))`.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for FprAtTpr {
    fn default() -> Self {
        Self::new()
    }
}

const USAGE: &str = "3 arguments: fpr_at_tpr(score, is_positive, target_tpr)";

impl AggregateUDFImpl for FprAtTpr {
    fn name(&self) -> &str {
        "fpr_at_tpr"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        check_arity(name, USAGE, arg_types, 3, 3)?;
        Ok(vec![
            coerce_number(name, "score", &arg_types[0])?,
            coerce_label(name, "is_positive", &arg_types[1])?,
            coerce_number(name, "target_tpr", &arg_types[2])?,
        ])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(ScoredLabels::state_fields(args.name))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let target_tpr = match literal_arg(&args, 2) {
            Some(ScalarValue::Float64(Some(t))) if (0.0..=1.0).contains(t) => *t,
            Some(other) => {
                return plan_err!("fpr_at_tpr: target_tpr must be between 0 and 1, got {other}")
            }
            None => return plan_err!("fpr_at_tpr: target_tpr must be a constant, e.g. 0.95"),
        };
        Ok(Box::new(FprAtTprAccumulator {
            target_tpr,
            values: ScoredLabels::default(),
        }))
    }
}

/// Collects every `(score, label)` pair of a group; see [`ScoredLabels`].
#[derive(Debug)]
struct FprAtTprAccumulator {
    target_tpr: f64,
    values: ScoredLabels,
}

impl Accumulator for FprAtTprAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.values.update("fpr_at_tpr", values)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.values.merge("fpr_at_tpr", states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.values.state())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(f64_result(fpr_at_tpr(
            &self.values.scores,
            &self.values.labels,
            self.target_tpr,
        )))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.values.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCORES: [f64; 6] = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
    const LABELS: [bool; 6] = [true, false, true, false, true, false];

    #[test]
    fn reads_the_staircase() {
        // Vertices (fpr, tpr): (0,0) (0,1/3) (1/3,1/3) (1/3,2/3) (2/3,2/3) (2/3,1) (1,1).
        let at = |t| fpr_at_tpr(&SCORES, &LABELS, t).unwrap_or(f64::NAN);
        assert_eq!(at(0.95), 2.0 / 3.0);
        assert_eq!(at(0.5), 1.0 / 3.0);
        assert_eq!(at(0.2), 0.0);
        assert_eq!(at(0.0), 0.0);
    }

    #[test]
    fn vertical_segment_at_target_takes_highest_fpr() {
        // TPR 1/3 holds from FPR 0 to 1/3, TPR 2/3 from 1/3 to 2/3, TPR 1 from 2/3 to 1.
        assert_eq!(fpr_at_tpr(&SCORES, &LABELS, 1.0 / 3.0), Some(1.0 / 3.0));
        assert_eq!(fpr_at_tpr(&SCORES, &LABELS, 2.0 / 3.0), Some(2.0 / 3.0));
        assert_eq!(fpr_at_tpr(&SCORES, &LABELS, 1.0), Some(1.0));
        // Negatives above every positive: TPR 0 already has FPR 1/2.
        assert_eq!(
            fpr_at_tpr(&[0.9, 0.5, 0.1], &[false, true, false], 0.0),
            Some(0.5)
        );
    }

    #[test]
    fn interpolates_along_a_tie() {
        // A tie of one positive and one negative joins (1/3, 2/3) to (2/3, 1) diagonally.
        let scores = [0.9, 0.8, 0.7, 0.6, 0.6, 0.2];
        let labels = [true, true, false, true, false, false];
        let fpr = fpr_at_tpr(&scores, &labels, 0.95).unwrap_or(f64::NAN);
        assert!((fpr - (0.95 - 1.0 / 3.0)).abs() < 1e-15);
    }

    #[test]
    fn tied_scores_move_together() {
        // All tied: the only vertices are (0,0) and (1,1), so FPR == TPR.
        let labels = [true, false, true, false];
        assert_eq!(fpr_at_tpr(&[0.5; 4], &labels, 0.5), Some(0.5));
        assert_eq!(fpr_at_tpr(&[0.5; 4], &labels, 0.95), Some(0.95));
    }

    #[test]
    fn perfect_separation_has_zero_fpr() {
        let labels = [true, true, false, false];
        assert_eq!(fpr_at_tpr(&[0.9, 0.8, 0.2, 0.1], &labels, 0.95), Some(0.0));
        // np.interp semantics: the vertical segment at TPR 1 ends at FPR 1.
        assert_eq!(fpr_at_tpr(&[0.9, 0.8, 0.2, 0.1], &labels, 1.0), Some(1.0));
    }

    #[test]
    fn undefined_cases() {
        assert_eq!(fpr_at_tpr(&[], &[], 0.95), None);
        assert_eq!(fpr_at_tpr(&[0.1, 0.2], &[true, true], 0.95), None);
        assert_eq!(fpr_at_tpr(&[0.1], &[true, false], 0.95), None);
        assert_eq!(fpr_at_tpr(&SCORES, &LABELS, 1.5), None);
        assert_eq!(fpr_at_tpr(&SCORES, &LABELS, f64::NAN), None);
    }
}
