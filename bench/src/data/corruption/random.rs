//! The random draws the corruptions need, built on `rand`'s uniform generator.
//!
//! The crate depends on `rand` but not `rand_distr`, and two small samplers are cheaper than a
//! new dependency. All draws go through `&mut dyn RngCore` so one seeded ChaCha stream drives a
//! whole corruption, which is what makes results reproducible from a seed.

use rand::{Rng, RngCore};

/// Uniform in `[lo, hi)`.
pub(super) fn uniform(rng: &mut dyn RngCore, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Standard normal by Box-Muller (one of the pair is discarded: simpler, and speed is irrelevant
/// at 784 pixels).
pub(super) fn normal(rng: &mut dyn RngCore) -> f64 {
    // 1 - U is in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Poisson with mean `lambda` (0 for `lambda <= 0`).
///
/// Knuth's multiplication method is exact but underflows `exp(-lambda)` for large means, so the
/// mean is split into chunks of at most 30: a sum of independent Poisson variables is Poisson
/// with the summed mean. Shot noise needs means up to 500 (cost is linear in the mean).
pub(super) fn poisson(rng: &mut dyn RngCore, lambda: f64) -> f64 {
    const CHUNK: f64 = 30.0;
    let mut remaining = lambda;
    let mut total = 0u64;
    while remaining > 0.0 {
        let part = remaining.min(CHUNK);
        remaining -= part;
        let limit = (-part).exp();
        let mut prod = rng.random::<f64>();
        while prod > limit {
            total += 1;
            prod *= rng.random::<f64>();
        }
    }
    total as f64
}

/// Integer in `lo..hi` (exclusive), like `numpy.random.randint(lo, hi)`.
pub(super) fn int_in(rng: &mut dyn RngCore, lo: i64, hi: i64) -> i64 {
    rng.random_range(lo..hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn moments(samples: &[f64]) -> (f64, f64) {
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var)
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let s: Vec<f64> = (0..20_000).map(|_| normal(&mut rng)).collect();
        let (mean, var) = moments(&s);
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.04, "{mean} {var}");
    }

    #[test]
    fn poisson_mean_equals_variance_across_chunks() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for lambda in [0.5, 7.0, 75.0, 500.0] {
            let s: Vec<f64> = (0..5_000).map(|_| poisson(&mut rng, lambda)).collect();
            let (mean, var) = moments(&s);
            let tol = 5.0 * (lambda / 5_000.0).sqrt();
            assert!((mean - lambda).abs() < tol, "lambda {lambda}: mean {mean}");
            assert!((var / lambda - 1.0).abs() < 0.1, "lambda {lambda}: var {var}");
        }
        assert_eq!(poisson(&mut rng, 0.0), 0.0);
    }
}
