//! Noise corruptions: Gaussian, shot (Poisson) and impulse (salt and pepper).
//!
//! All three act per pixel, so the CIFAR-10-C constants carry over unchanged to 28x28.

use rand::RngCore;

use super::plane::Plane;
use super::random::{normal, poisson, uniform};

/// Standard deviation of the additive noise (pixel values in [0, 1]).
const GAUSSIAN_SIGMA: [f32; 5] = [0.04, 0.06, 0.08, 0.09, 0.10];
/// Photons per unit intensity: lower means relatively noisier.
const SHOT_RATE: [f32; 5] = [500.0, 250.0, 100.0, 75.0, 50.0];
/// Fraction of pixels replaced by 0 or 1 (half each on average).
const IMPULSE_AMOUNT: [f32; 5] = [0.01, 0.02, 0.03, 0.05, 0.07];

pub(super) fn gaussian_noise(p: &Plane, s: usize, rng: &mut dyn RngCore) -> Plane {
    let sigma = GAUSSIAN_SIGMA[s];
    p.map(|v| v + sigma * normal(rng) as f32)
}

pub(super) fn shot_noise(p: &Plane, s: usize, rng: &mut dyn RngCore) -> Plane {
    let rate = SHOT_RATE[s];
    // Black pixels (the Fashion-MNIST background) receive no photons and stay black, as in
    // the reference.
    p.map(|v| poisson(rng, (v.max(0.0) * rate) as f64) as f32 / rate)
}

/// `skimage.util.random_noise(mode='s&p', amount)`: each pixel is flipped with probability
/// `amount`, to white or black with equal probability.
pub(super) fn impulse_noise(p: &Plane, s: usize, rng: &mut dyn RngCore) -> Plane {
    let amount = IMPULSE_AMOUNT[s] as f64;
    p.map(|v| {
        let flip = uniform(rng, 0.0, 1.0) < amount;
        let salt = uniform(rng, 0.0, 1.0) < 0.5;
        match (flip, salt) {
            (false, _) => v,
            (true, true) => 1.0,
            (true, false) => 0.0,
        }
    })
}
