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

/// Number of histogram bins, scikit-image's default for `threshold_otsu`.
pub const OTSU_BINS: usize = 256;

/// Otsu's threshold of `values`: the histogram bin centre that maximises the between-class
/// variance of the values at or below it and the values above it.
///
/// This reproduces `skimage.filters.threshold_otsu(values, nbins=256)` on a floating-point
/// array bit for bit: 256 equal-width bins spanning `[min, max]` (NumPy's bin edges and edge
/// rules), the returned value is a bin centre, class weights in `f32` as scikit-image keeps
/// them, and the first bin wins a tie. If all values are equal, that value is returned.
///
/// Non-finite values (NaN, ±∞) are ignored, since they have no place in a finite histogram.
/// Returns `None` when no finite value is left.
///
/// ```
/// use cliptta_udfs::otsu_threshold;
/// // 0.3 lies in the bin centred on 0.2984375, the last bin of the lower class. Being a bin
/// // centre, the threshold can be up to half a bin below that class's largest value.
/// assert_eq!(otsu_threshold(&[0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), Some(0.2984375));
/// assert_eq!(otsu_threshold(&[0.3, 0.3]), Some(0.3));
/// assert_eq!(otsu_threshold(&[]), None);
/// ```
pub fn otsu_threshold(values: &[f64]) -> Option<f64> {
    let finite = || values.iter().copied().filter(|v| v.is_finite());
    let min = finite().reduce(f64::min)?;
    let max = finite().reduce(f64::max)?;
    if min == max {
        return Some(min);
    }

    let edges = bin_edges(min, max, OTSU_BINS);
    let mut counts = [0u64; OTSU_BINS];
    for v in finite() {
        counts[bin_index(v, min, max, &edges)] += 1;
    }
    let centers: Vec<f64> = edges.windows(2).map(|e| (e[0] + e[1]) / 2.0).collect();

    // scikit-image casts the counts to float32 before the cumulative sums, so the class
    // weights (and their products) are rounded as f32; mirroring that keeps the argmax, and
    // so the threshold, identical on large inputs.
    let counts: Vec<f32> = counts.iter().map(|&c| c as f32).collect();
    let weight1: Vec<f32> = cumsum_f32(counts.iter().copied());
    let mut weight2: Vec<f32> = cumsum_f32(counts.iter().rev().copied());
    weight2.reverse();
    let weighted: Vec<f64> = counts
        .iter()
        .zip(&centers)
        .map(|(&c, &center)| f64::from(c) * center)
        .collect();
    let mean1: Vec<f64> = cumsum_f64(weighted.iter().copied())
        .into_iter()
        .zip(&weight1)
        .map(|(s, &w)| s / f64::from(w))
        .collect();
    let mut mean2: Vec<f64> = cumsum_f64(weighted.iter().rev().copied())
        .into_iter()
        .zip(weight2.iter().rev())
        .map(|(s, &w)| s / f64::from(w))
        .collect();
    mean2.reverse();

    let mut best = 0;
    let mut best_variance = f64::NEG_INFINITY;
    for i in 0..OTSU_BINS - 1 {
        let diff = mean1[i] - mean2[i + 1];
        let variance = f64::from(weight1[i] * weight2[i + 1]) * (diff * diff);
        // Strictly greater: like `np.argmax`, the first maximum wins.
        if variance > best_variance {
            best_variance = variance;
            best = i;
        }
    }
    Some(centers[best])
}

fn cumsum_f32(values: impl Iterator<Item = f32>) -> Vec<f32> {
    values
        .scan(0.0f32, |acc, v| {
            *acc += v;
            Some(*acc)
        })
        .collect()
}

fn cumsum_f64(values: impl Iterator<Item = f64>) -> Vec<f64> {
    values
        .scan(0.0f64, |acc, v| {
            *acc += v;
            Some(*acc)
        })
        .collect()
}

/// Bin edges as `np.linspace(min, max, bins + 1)` computes them, so values on an edge land in
/// the same bin as in NumPy.
fn bin_edges(min: f64, max: f64, bins: usize) -> Vec<f64> {
    let delta = max - min;
    let step = delta / bins as f64;
    let mut edges: Vec<f64> = (0..=bins)
        .map(|i| {
            let i = i as f64;
            // NumPy's fallback when the step underflows to zero.
            let offset = if step == 0.0 {
                i / bins as f64 * delta
            } else {
                i * step
            };
            offset + min
        })
        .collect();
    if let Some(last) = edges.last_mut() {
        *last = max;
    }
    edges
}

/// The bin of `v` under `np.histogram`'s rules: bins are half-open `[lo, hi)` except the last,
/// which includes `max`. The arithmetic guess can be one bin off near an edge, so it is
/// corrected against the edges themselves, as NumPy does.
fn bin_index(v: f64, min: f64, max: f64, edges: &[f64]) -> usize {
    let bins = edges.len() - 1;
    let guess = ((v - min) / (max - min) * bins as f64) as usize;
    let mut index = guess.min(bins - 1);
    if index > 0 && v < edges[index] {
        index -= 1;
    }
    if index + 1 < bins && v >= edges[index + 1] {
        index += 1;
    }
    index
}

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
