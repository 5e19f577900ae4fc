//! Area under the ROC curve, without DataFusion.

use super::ranked::{ranked, Order};

/// Area under the ROC curve of `scores` (higher means "more positive") against `positives`.
///
/// Tied scores count one half, exactly as scikit-learn's `roc_auc_score`: the result is the
/// Mann–Whitney probability that a random positive scores above a random negative, computed
/// with integer arithmetic, so it does not depend on the input order.
///
/// Pairs whose score is NaN are ignored. Returns `None` when the slices differ in length or
/// when, after that, there is no positive or no negative (the curve is undefined).
///
/// ```
/// use cliptta_udfs::auroc;
/// assert_eq!(auroc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]), Some(0.75));
/// assert_eq!(auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
/// assert_eq!(auroc(&[0.5, 0.7], &[true, true]), None);
/// ```
pub fn auroc(scores: &[f64], positives: &[bool]) -> Option<f64> {
    let pairs = ranked(scores, positives, Order::Ascending)?;

    // Twice the Mann–Whitney U statistic: each positive earns 2 per negative scored strictly
    // below it and 1 per negative tied with it. Doubling keeps everything an integer.
    let mut twice_u: u128 = 0;
    let mut negatives_below: u128 = 0;
    let (mut n_pos, mut n_neg) = (0u128, 0u128);
    for group in pairs.chunk_by(|a, b| a.0 == b.0) {
        let pos = group.iter().filter(|(_, positive)| *positive).count() as u128;
        let neg = group.len() as u128 - pos;
        twice_u += pos * (2 * negatives_below + neg);
        negatives_below += neg;
        n_pos += pos;
        n_neg += neg;
    }
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    Some(twice_u as f64 / (2 * n_pos * n_neg) as f64)
}
