//! Expected calibration error, without DataFusion.

/// Default number of equal-width confidence bins, as in Guo et al. (2017).
pub const ECE_DEFAULT_BINS: usize = 15;

/// Largest bin count `ece` accepts in SQL; the state holds three lists of this length.
pub const ECE_MAX_BINS: usize = 10_000;

/// Expected calibration error of `confidences` (each in `[0, 1]`) against whether each
/// prediction was `correct`, with `bins` equal-width bins on `[0, 1]`.
///
/// Bins are right-closed, `(k/bins, (k+1)/bins]`, with a confidence of exactly 0 put in the
/// first bin; the edges are `np.linspace(0, 1, bins + 1)`, so values on an edge land in the
/// same bin as in the usual NumPy/PyTorch implementations. The result is
/// `Σ_b (n_b / n) · |accuracy_b − mean confidence_b|` over non-empty bins.
///
/// Pairs whose confidence is NaN are ignored. Returns `None` when the slices differ in
/// length, `bins` is 0, a confidence lies outside `[0, 1]`, or nothing is left.
///
/// ```
/// use cliptta_udfs::ece;
/// // One bin: mean confidence 0.75, accuracy 0.5.
/// assert_eq!(ece(&[0.5, 1.0], &[true, false], 1), Some(0.25));
/// assert_eq!(ece(&[], &[], 15), None);
/// ```
pub fn ece(confidences: &[f64], correct: &[bool], bins: usize) -> Option<f64> {
    if confidences.len() != correct.len() || bins == 0 {
        return None;
    }
    let mut totals = BinTotals::new(bins);
    for (&confidence, &correct) in confidences.iter().zip(correct) {
        if !confidence.is_nan() {
            totals.add(confidence, correct).ok()?;
        }
    }
    totals.ece()
}

/// Per-bin sums, which are all that the ECE needs; they add up across partitions, so the
/// aggregate state stays `O(bins)` however many rows a group has.
#[derive(Debug, Clone)]
pub(crate) struct BinTotals {
    /// Upper edges of the bins; the last is exactly 1.
    pub(crate) upper_edges: Vec<f64>,
    pub(crate) counts: Vec<u64>,
    pub(crate) confidence_sums: Vec<f64>,
    pub(crate) correct_counts: Vec<u64>,
}

/// A confidence outside `[0, 1]`, reported with its value.
#[derive(Debug)]
pub(crate) struct OutOfRange(pub(crate) f64);

impl BinTotals {
    pub(crate) fn new(bins: usize) -> Self {
        // `np.linspace(0, 1, bins + 1)[1:]`: k * (1 / bins), with the last edge exactly 1.
        let step = 1.0 / bins as f64;
        let mut upper_edges: Vec<f64> = (1..=bins).map(|k| k as f64 * step).collect();
        if let Some(last) = upper_edges.last_mut() {
            *last = 1.0;
        }
        Self {
            upper_edges,
            counts: vec![0; bins],
            confidence_sums: vec![0.0; bins],
            correct_counts: vec![0; bins],
        }
    }

    pub(crate) fn add(&mut self, confidence: f64, correct: bool) -> std::result::Result<(), OutOfRange> {
        if !(0.0..=1.0).contains(&confidence) {
            return Err(OutOfRange(confidence));
        }
        // The first bin whose upper edge is >= confidence; exists since the last edge is 1.
        let bin = self.upper_edges.partition_point(|&edge| edge < confidence);
        let bin = bin.min(self.counts.len() - 1);
        self.counts[bin] += 1;
        self.confidence_sums[bin] += confidence;
        self.correct_counts[bin] += u64::from(correct);
        Ok(())
    }

    pub(crate) fn ece(&self) -> Option<f64> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let mut ece = 0.0;
        for ((&n, &confidence_sum), &n_correct) in self
            .counts
            .iter()
            .zip(&self.confidence_sums)
            .zip(&self.correct_counts)
        {
            if n > 0 {
                let n_f = n as f64;
                let gap = (n_correct as f64 / n_f - confidence_sum / n_f).abs();
                ece += gap * (n_f / total as f64);
            }
        }
        Some(ece)
    }
}
