//! Accuracy, without DataFusion.

/// Fraction of positions where `predicted` equals `actual`.
///
/// Returns `None` when the slices are empty or differ in length.
///
/// ```
/// use cliptta_udfs::accuracy;
/// assert_eq!(accuracy(&["cat", "dog", "dog"], &["cat", "cat", "dog"]), Some(2.0 / 3.0));
/// assert_eq!(accuracy::<u32>(&[], &[]), None);
/// ```
pub fn accuracy<T: PartialEq>(predicted: &[T], actual: &[T]) -> Option<f64> {
    if predicted.is_empty() || predicted.len() != actual.len() {
        return None;
    }
    let correct = predicted.iter().zip(actual).filter(|(p, a)| p == a).count();
    Some(correct as f64 / predicted.len() as f64)
}
