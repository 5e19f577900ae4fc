//! False-positive rate at a true-positive rate, without DataFusion.

use super::ranked::{ranked, Order};

/// False-positive rate of `scores` (higher means "more positive") against `positives` at the
/// point of the ROC curve where the true-positive rate equals `target_tpr`.
///
/// The ROC curve is scikit-learn's `roc_curve` (one vertex per distinct score, tied scores
/// move together), and the value is read off it by linear interpolation exactly as
/// `np.interp(target_tpr, tpr, fpr)` does, which is also what
/// `scipy.interpolate.interp1d(tpr, fpr)(target_tpr)`, the FPR95 of the CLIPTTA paper's
/// evaluation code, computes: between the last vertex whose TPR is at most the target and the
/// next one. Where the curve is vertical at exactly the target TPR, that is the highest FPR on
/// the vertical segment; in particular a target of 1 always gives 1, the last vertex.
///
/// Pairs whose score is NaN are ignored. Returns `None` when the slices differ in length,
/// `target_tpr` is outside `[0, 1]`, or there is no positive or no negative.
///
/// ```
/// use cliptta_udfs::fpr_at_tpr;
/// let scores = [0.9, 0.8, 0.7, 0.6, 0.6, 0.2];
/// let positives = [true, true, false, true, false, false];
/// // Vertices (FPR, TPR): (0, 0) (0, 1/3) (0, 2/3) (1/3, 2/3) (2/3, 1) (1, 1).
/// assert_eq!(fpr_at_tpr(&scores, &positives, 0.5), Some(0.0));
/// // TPR 2/3 holds from FPR 0 to 1/3: the highest FPR is taken.
/// assert_eq!(fpr_at_tpr(&scores, &positives, 2.0 / 3.0), Some(1.0 / 3.0));
/// // The tie at 0.6 joins (1/3, 2/3) to (2/3, 1) with a straight line.
/// let fpr95 = fpr_at_tpr(&scores, &positives, 0.95).unwrap_or(f64::NAN);
/// assert!((fpr95 - (0.95 - 1.0 / 3.0)).abs() < 1e-12);
/// ```
pub fn fpr_at_tpr(scores: &[f64], positives: &[bool], target_tpr: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&target_tpr) {
        return None;
    }
    let pairs = ranked(scores, positives, Order::Descending)?;
    let n_pos = pairs.iter().filter(|(_, positive)| *positive).count();
    let n_neg = pairs.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }

    let rate = |count: usize, total: usize| count as f64 / total as f64;
    let (mut tp, mut fp) = (0usize, 0usize);
    // The last vertex with TPR <= target so far; the curve starts at the origin.
    let (mut lo_tpr, mut lo_fpr) = (0.0, 0.0);
    for group in pairs.chunk_by(|a, b| a.0 == b.0) {
        let pos = group.iter().filter(|(_, positive)| *positive).count();
        tp += pos;
        fp += group.len() - pos;
        let (tpr, fpr) = (rate(tp, n_pos), rate(fp, n_neg));
        if tpr > target_tpr {
            if lo_tpr == target_tpr {
                return Some(lo_fpr);
            }
            // Same expression as NumPy's, so results agree to the last bit.
            let slope = (fpr - lo_fpr) / (tpr - lo_tpr);
            return Some(slope * (target_tpr - lo_tpr) + lo_fpr);
        }
        (lo_tpr, lo_fpr) = (tpr, fpr);
    }
    // No vertex passes the target: it is the final TPR of 1, reached last at (1, 1).
    Some(lo_fpr)
}
