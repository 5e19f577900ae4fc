//! Helpers shared by the evaluation aggregates: argument coercion with clear planning errors,
//! list-valued accumulator state, and access to constant arguments.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{internal_datafusion_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::utils::format_state_name;
use datafusion::physical_expr::expressions::Literal;

/// Fails planning unless the call has between `min` and `max` arguments.
pub(crate) fn check_arity(
    name: &str,
    usage: &str,
    arg_types: &[DataType],
    min: usize,
    max: usize,
) -> Result<()> {
    let n = arg_types.len();
    if n < min || n > max {
        return plan_err!("{name} takes {usage}, got {n} argument(s)");
    }
    Ok(())
}

/// Scores and confidences are compared as `Float64`, whatever numeric type they arrive as.
pub(crate) fn coerce_number(name: &str, what: &str, data_type: &DataType) -> Result<DataType> {
    if data_type.is_numeric() || data_type.is_null() {
        Ok(DataType::Float64)
    } else {
        plan_err!("{name}: {what} must be numeric, got {data_type}")
    }
}

/// Binary labels are booleans; integer 0/1 labels (as produced by most Python tooling) are
/// accepted too and cast with "non-zero is true".
pub(crate) fn coerce_label(name: &str, what: &str, data_type: &DataType) -> Result<DataType> {
    if data_type == &DataType::Boolean || data_type.is_integer() || data_type.is_null() {
        Ok(DataType::Boolean)
    } else {
        plan_err!("{name}: {what} must be boolean (or integer 0/1), got {data_type}")
    }
}

/// The constant value of argument `index`, if the planner folded it to a literal.
pub(crate) fn literal_arg<'a>(args: &'a AccumulatorArgs, index: usize) -> Option<&'a ScalarValue> {
    args.exprs
        .get(index)
        .and_then(|expr| expr.downcast_ref::<Literal>())
        .map(|literal| literal.value())
}

/// A nullable list-of-`item` state field, named uniquely for this aggregate expression.
pub(crate) fn list_state_field(expr_name: &str, state: &str, item: DataType) -> FieldRef {
    Arc::new(Field::new(
        format_state_name(expr_name, state),
        DataType::List(Arc::new(Field::new_list_field(item, true))),
        true,
    ))
}

/// Wraps one array as a single-row list scalar, matching [`list_state_field`].
pub(crate) fn list_scalar(values: ArrayRef) -> ScalarValue {
    let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
    let offsets = OffsetBuffer::from_lengths([values.len()]);
    ScalarValue::List(Arc::new(ListArray::new(field, offsets, values, None)))
}

/// Calls `f` with the inner array of every non-null row of a list state column.
pub(crate) fn for_each_list(
    name: &str,
    state: &ArrayRef,
    mut f: impl FnMut(ArrayRef) -> Result<()>,
) -> Result<()> {
    let lists = state.as_list_opt::<i32>().ok_or_else(|| {
        internal_datafusion_err!("{name}: state is {}, expected a list", state.data_type())
    })?;
    for i in 0..lists.len() {
        if lists.is_valid(i) {
            f(lists.value(i))?;
        }
    }
    Ok(())
}

/// Downcasts an argument or state array that coercion guarantees to be `Float64`.
pub(crate) fn as_f64s<'a>(name: &str, array: &'a ArrayRef) -> Result<&'a Float64Array> {
    array.as_primitive_opt::<Float64Type>().ok_or_else(|| {
        internal_datafusion_err!("{name}: expected Float64, got {}", array.data_type())
    })
}

/// Downcasts an argument or state array that coercion guarantees to be `Boolean`.
pub(crate) fn as_bools<'a>(name: &str, array: &'a ArrayRef) -> Result<&'a BooleanArray> {
    array.as_boolean_opt().ok_or_else(|| {
        internal_datafusion_err!("{name}: expected Boolean, got {}", array.data_type())
    })
}

/// `(score, label)` pairs collected for the exact ranking metrics ([`crate::auroc`],
/// [`crate::fpr_at_tpr`]). Ranking metrics cannot be combined from partial results, so the
/// state is the values themselves, two parallel lists, and merging concatenates them.
#[derive(Debug, Default)]
pub(crate) struct ScoredLabels {
    pub(crate) scores: Vec<f64>,
    pub(crate) labels: Vec<bool>,
}

impl ScoredLabels {
    /// State field definitions; the order matches [`Self::state`].
    pub(crate) fn state_fields(expr_name: &str) -> Vec<FieldRef> {
        vec![
            list_state_field(expr_name, "scores", DataType::Float64),
            list_state_field(expr_name, "labels", DataType::Boolean),
        ]
    }

    /// Appends rows where both values are present and the score is orderable (not NaN).
    fn push_arrays(&mut self, name: &str, scores: &ArrayRef, labels: &ArrayRef) -> Result<()> {
        let scores = as_f64s(name, scores)?;
        let labels = as_bools(name, labels)?;
        if scores.len() != labels.len() {
            return Err(internal_datafusion_err!(
                "{name}: {} scores but {} labels",
                scores.len(),
                labels.len()
            ));
        }
        self.scores.reserve(scores.len());
        self.labels.reserve(scores.len());
        for (score, label) in scores.iter().zip(labels.iter()) {
            if let (Some(score), Some(label)) = (score, label) {
                if !score.is_nan() {
                    self.scores.push(score);
                    self.labels.push(label);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn update(&mut self, name: &str, values: &[ArrayRef]) -> Result<()> {
        match values {
            [scores, labels, ..] => self.push_arrays(name, scores, labels),
            _ => Err(internal_datafusion_err!(
                "{name}: expected two input columns"
            )),
        }
    }

    pub(crate) fn state(&mut self) -> Vec<ScalarValue> {
        let scores = Float64Array::from(std::mem::take(&mut self.scores));
        let labels = BooleanArray::from(std::mem::take(&mut self.labels));
        vec![list_scalar(Arc::new(scores)), list_scalar(Arc::new(labels))]
    }

    pub(crate) fn merge(&mut self, name: &str, states: &[ArrayRef]) -> Result<()> {
        let [scores, labels, ..] = states else {
            return Err(internal_datafusion_err!(
                "{name}: expected two state columns"
            ));
        };
        let mut score_lists = Vec::new();
        for_each_list(name, scores, |inner| {
            score_lists.push(inner);
            Ok(())
        })?;
        let mut label_lists = Vec::new();
        for_each_list(name, labels, |inner| {
            label_lists.push(inner);
            Ok(())
        })?;
        if score_lists.len() != label_lists.len() {
            return Err(internal_datafusion_err!(
                "{name}: mismatched score and label states"
            ));
        }
        for (scores, labels) in score_lists.iter().zip(label_lists.iter()) {
            self.push_arrays(name, scores, labels)?;
        }
        Ok(())
    }

    pub(crate) fn size(&self) -> usize {
        self.scores.capacity() * size_of::<f64>() + self.labels.capacity() * size_of::<bool>()
    }
}

/// `Float64` result scalar, null when the metric is undefined.
pub(crate) fn f64_result(value: Option<f64>) -> ScalarValue {
    ScalarValue::Float64(value)
}
