//! Scores paired with their labels and sorted, the common first step of the ranking metrics.

use std::cmp::Ordering;

/// The order of [`ranked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    Ascending,
    Descending,
}

/// `(score, positive)` pairs without NaN scores, sorted by score in `order`; `None` when the
/// slices differ in length. `partial_cmp` (not `total_cmp`) keeps -0.0 and 0.0 in one tie group,
/// which the callers walk with `chunk_by`.
pub(crate) fn ranked(scores: &[f64], positives: &[bool], order: Order) -> Option<Vec<(f64, bool)>> {
    if scores.len() != positives.len() {
        return None;
    }
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(positives.iter().copied()).filter(|(score, _)| !score.is_nan()).collect();
    match order {
        Order::Ascending => pairs.sort_unstable_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal)),
        Order::Descending => pairs.sort_unstable_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal)),
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_nan_and_sorts_with_signed_zeros_tied() {
        let pairs = ranked(&[0.5, f64::NAN, -0.0, 0.0, -1.0], &[true, true, false, true, false], Order::Ascending).unwrap();
        assert_eq!(pairs.len(), 4);
        assert_eq!(pairs[0], (-1.0, false));
        assert_eq!(pairs.chunk_by(|a, b| a.0 == b.0).count(), 3);
        assert_eq!(ranked(&[1.0, 2.0], &[true, false], Order::Descending).unwrap()[0].0, 2.0);
        assert!(ranked(&[1.0], &[], Order::Ascending).is_none());
    }
}
