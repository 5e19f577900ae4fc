//! Diamond-square plasma fractal: the cloud texture behind fog (and our frost substitute).
//!
//! Same algorithm and constants as the reference's `plasma_fractal` (itself from FLHerne's
//! mapgen): a toroidal `size` x `size` height map, seeded with 0 at the origin; each level sets
//! square centres, then edge midpoints, to the mean of their four neighbours plus a uniform
//! perturbation in `±wibble²`; `wibble` starts at 100 and is divided by `decay` per level, so a
//! larger decay gives a smoother map. The result is rescaled to [0, 1].

use rand::RngCore;

use super::plane::Plane;
use super::random::uniform;

/// A `size` x `size` plasma fractal in [0, 1]; `size` is rounded up to a power of two.
pub(super) fn plasma_fractal(size: usize, decay: f64, rng: &mut dyn RngCore) -> Plane {
    let n = size.max(2).next_power_of_two();
    let mut map = vec![0f64; n * n];
    let idx = |x: usize, y: usize| (y % n) * n + (x % n);
    let mut step = n;
    let mut wibble = 100f64;
    while step >= 2 {
        let half = step / 2;
        // Squares: the centre of each step-sized cell from its four corners.
        for y in (0..n).step_by(step) {
            for x in (0..n).step_by(step) {
                let sum = map[idx(x, y)] + map[idx(x + step, y)] + map[idx(x, y + step)] + map[idx(x + step, y + step)];
                map[idx(x + half, y + half)] = sum / 4.0 + wibble * uniform(rng, -wibble, wibble);
            }
        }
        // Diamonds: edge midpoints from the two corners and the two centres around them (the
        // torus wraps at the edges).
        for y in (0..n).step_by(step) {
            for x in (0..n).step_by(step) {
                let up = map[idx(x + half, y + n - half)] + map[idx(x + half, y + half)];
                let horizontal = map[idx(x, y)] + map[idx(x + step, y)];
                map[idx(x + half, y)] = (up + horizontal) / 4.0 + wibble * uniform(rng, -wibble, wibble);
                let left = map[idx(x + n - half, y + half)] + map[idx(x + half, y + half)];
                let vertical = map[idx(x, y)] + map[idx(x, y + step)];
                map[idx(x, y + half)] = (left + vertical) / 4.0 + wibble * uniform(rng, -wibble, wibble);
            }
        }
        step /= 2;
        wibble /= decay;
    }
    let min = map.iter().copied().fold(f64::INFINITY, f64::min);
    let max = map.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = if max > min { max - min } else { 1.0 };
    Plane { w: n, h: n, px: map.iter().map(|v| ((v - min) / range) as f32).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Mean absolute difference between horizontal neighbours: high for rough maps.
    fn roughness(p: &Plane) -> f32 {
        let mut acc = 0.0;
        for y in 0..p.h {
            for x in 1..p.w {
                acc += (p.get(x, y) - p.get(x - 1, y)).abs();
            }
        }
        acc / (p.h * (p.w - 1)) as f32
    }

    #[test]
    fn spans_unit_range_and_decay_smooths() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let smooth = plasma_fractal(32, 3.0, &mut rng);
        assert_eq!((smooth.w, smooth.h), (32, 32));
        assert_eq!(smooth.px.iter().copied().fold(f32::INFINITY, f32::min), 0.0);
        assert_eq!(smooth.max(), 1.0);
        let (mut r_smooth, mut r_rough) = (0.0, 0.0);
        for _ in 0..20 {
            r_smooth += roughness(&plasma_fractal(32, 3.0, &mut rng));
            r_rough += roughness(&plasma_fractal(32, 1.5, &mut rng));
        }
        assert!(r_rough > 1.5 * r_smooth, "{r_rough} vs {r_smooth}");
    }
}
