//! Otsu's threshold, without DataFusion.

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

pub(crate) fn cumsum_f32(values: impl Iterator<Item = f32>) -> Vec<f32> {
    values
        .scan(0.0f32, |acc, v| {
            *acc += v;
            Some(*acc)
        })
        .collect()
}

pub(crate) fn cumsum_f64(values: impl Iterator<Item = f64>) -> Vec<f64> {
    values
        .scan(0.0f64, |acc, v| {
            *acc += v;
            Some(*acc)
        })
        .collect()
}

/// Bin edges as `np.linspace(min, max, bins + 1)` computes them, so values on an edge land in
/// the same bin as in NumPy.
pub(crate) fn bin_edges(min: f64, max: f64, bins: usize) -> Vec<f64> {
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
pub(crate) fn bin_index(v: f64, min: f64, max: f64, edges: &[f64]) -> usize {
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
