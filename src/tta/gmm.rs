//! A two-component Gaussian mixture on one-dimensional data, fitted by EM as scikit-learn's
//! `GaussianMixture(n_components=2)` fits it (UniEnt splits each batch's scores with one):
//! `reg_covar` 1e-6 added to each variance, stop when the mean log-likelihood changes by less
//! than `tol` 1e-3, at most 100 iterations, posteriors from the final parameters.
//!
//! scikit-learn initialises from a k-means partition seeded by NumPy's global generator; here
//! the partition comes from Lloyd's iteration started at the minimum and the maximum, which is
//! deterministic. In one dimension both find the split of the sorted values that k-means
//! converges to; `tests/fixtures/unient-reference.json` records, for every fit of the official
//! run, whether the two partitions agreed.

/// A fitted mixture and the posteriors of the data it was fitted on.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixture {
    /// Mixing weights.
    pub weights: [f64; 2],
    /// Component means.
    pub means: [f64; 2],
    /// Component variances (with `reg_covar` added).
    pub variances: [f64; 2],
    /// EM iterations run.
    pub iterations: usize,
    /// Whether the log-likelihood settled within `tol`.
    pub converged: bool,
    /// Per point, the posterior probability of each component.
    pub posteriors: Vec<[f64; 2]>,
}

const REG_COVAR: f64 = 1e-6;
const TOL: f64 = 1e-3;
const MAX_ITER: usize = 100;

/// Fits the mixture; `None` for fewer than two points, a non-finite value, or no spread (the
/// components would coincide).
pub fn fit_two_gaussians(x: &[f64]) -> Option<Mixture> {
    if x.len() < 2 || x.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let labels = two_means(x)?;
    let resp: Vec<[f64; 2]> = labels.iter().map(|&l| if l == 0 { [1.0, 0.0] } else { [0.0, 1.0] }).collect();
    let (mut weights, mut means, mut variances) = estimate(x, &resp);
    // The initial weights are divided by the number of points; later ones by their sum.
    let n = x.len() as f64;
    weights = [weights[0] / n, weights[1] / n];
    let mut lower_bound = f64::NEG_INFINITY;
    let mut converged = false;
    let mut iterations = 0;
    for iter in 1..=MAX_ITER {
        iterations = iter;
        let (mean_log_norm, resp) = e_step(x, weights, means, variances);
        let (w, m, v) = estimate(x, &resp);
        let total = w[0] + w[1];
        weights = [w[0] / total, w[1] / total];
        means = m;
        variances = v;
        let change = mean_log_norm - lower_bound;
        lower_bound = mean_log_norm;
        if change.abs() < TOL {
            converged = true;
            break;
        }
    }
    let (_, posteriors) = e_step(x, weights, means, variances);
    Some(Mixture { weights, means, variances, iterations, converged, posteriors })
}

/// The two-means partition by Lloyd's iteration from centres (min, max); ties go to the first.
fn two_means(x: &[f64]) -> Option<Vec<u8>> {
    let (lo, hi) = x.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if lo >= hi {
        return None;
    }
    let mut centres = [lo, hi];
    let mut labels: Vec<u8> = Vec::new();
    for _ in 0..300 {
        let next: Vec<u8> = x.iter().map(|&v| u8::from((v - centres[1]).abs() < (v - centres[0]).abs())).collect();
        if next == labels {
            break;
        }
        labels = next;
        for (c, centre) in centres.iter_mut().enumerate() {
            let (sum, count) = x.iter().zip(&labels).filter(|(_, &l)| l as usize == c).fold((0.0, 0usize), |(s, k), (&v, _)| (s + v, k + 1));
            if count > 0 {
                *centre = sum / count as f64;
            }
        }
    }
    Some(labels)
}

/// Unnormalised weights (responsibility sums), means and variances from responsibilities.
fn estimate(x: &[f64], resp: &[[f64; 2]]) -> ([f64; 2], [f64; 2], [f64; 2]) {
    let mut nk = [0.0; 2];
    let mut means = [0.0; 2];
    let mut variances = [0.0; 2];
    for k in 0..2 {
        nk[k] = resp.iter().map(|r| r[k]).sum::<f64>() + 10.0 * f64::EPSILON;
        means[k] = resp.iter().zip(x).map(|(r, v)| r[k] * v).sum::<f64>() / nk[k];
        variances[k] = resp.iter().zip(x).map(|(r, v)| r[k] * (v - means[k]) * (v - means[k])).sum::<f64>() / nk[k] + REG_COVAR;
    }
    (nk, means, variances)
}

/// Mean log-likelihood and posteriors under the parameters.
fn e_step(x: &[f64], weights: [f64; 2], means: [f64; 2], variances: [f64; 2]) -> (f64, Vec<[f64; 2]>) {
    let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    let mut total = 0.0;
    let posteriors = x
        .iter()
        .map(|&v| {
            let mut lp = [0.0; 2];
            for k in 0..2 {
                let precision_chol = 1.0 / variances[k].sqrt();
                let y = (v - means[k]) * precision_chol;
                lp[k] = -0.5 * (ln_2pi + y * y) + precision_chol.ln() + weights[k].ln();
            }
            let max = lp[0].max(lp[1]);
            let norm = max + ((lp[0] - max).exp() + (lp[1] - max).exp()).ln();
            total += norm;
            [(lp[0] - norm).exp(), (lp[1] - norm).exp()]
        })
        .collect();
    (total / x.len() as f64, posteriors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_separated_groups_split_cleanly() {
        let x = [0.0, 0.1, 0.05, 0.12, 0.9, 1.0, 0.95];
        let m = fit_two_gaussians(&x).unwrap();
        assert!(m.converged);
        assert!((m.means[0] - 0.0675).abs() < 1e-3 && (m.means[1] - 0.95).abs() < 1e-3, "{m:?}");
        assert!(m.posteriors[..4].iter().all(|p| p[0] > 0.99) && m.posteriors[4..].iter().all(|p| p[1] > 0.99));
        assert!((m.weights[0] - 4.0 / 7.0).abs() < 1e-6);
        for p in &m.posteriors {
            assert!((p[0] + p[1] - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn degenerate_input_has_no_mixture() {
        assert!(fit_two_gaussians(&[0.3, 0.3, 0.3]).is_none());
        assert!(fit_two_gaussians(&[1.0]).is_none());
        assert!(fit_two_gaussians(&[0.0, f64::NAN]).is_none());
    }
}
