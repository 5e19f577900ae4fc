//! Weather corruptions: snow, frost and fog.

use rand::RngCore;

use super::filter::{clipped_zoom, motion_blur};
use super::frost::frost_texture;
use super::plane::{Plane, SPATIAL_SCALE};
use super::plasma::plasma_fractal;
use super::random::{normal, uniform};

/// Snow layer parameters: (noise mean, noise std, zoom, threshold, motion radius at 32 px, motion
/// sigma at 32 px, weight of the original image in the whitening blend).
const SNOW: [(f32, f32, f32, f32, f32, f32, f32); 5] = [
    (0.1, 0.2, 1.0, 0.6, 8.0, 3.0, 0.95),
    (0.1, 0.2, 1.0, 0.5, 10.0, 4.0, 0.9),
    (0.15, 0.3, 1.75, 0.55, 10.0, 4.0, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12.0, 6.0, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14.0, 12.0, 0.8),
];

/// (weight of the image, weight of the frost texture).
const FROST: [(f32, f32); 5] = [(1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)];

/// (fog thickness, plasma decay: lower is patchier).
const FOG: [(f32, f64); 5] = [(0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)];

/// Sparse bright flakes streaked by motion blur, added twice (the second copy rotated 180°), over
/// an image lightened towards white.
pub(super) fn snow(p: &Plane, s: usize, rng: &mut dyn RngCore) -> Plane {
    let (loc, scale, zoom, threshold, radius, sigma, keep) = SNOW[s];
    let noise = Plane::from_fn(p.w, p.h, |_, _| loc + scale * normal(rng) as f32);
    // Zooming enlarges the flakes; below-threshold noise is bare sky. The reference then stores
    // the layer as an 8-bit image (truncating) before ImageMagick blurs it.
    let flakes = clipped_zoom(&noise, zoom)
        .map(|v| if v < threshold { 0.0 } else { v })
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).floor() / 255.0);
    let angle = uniform(rng, -135.0, -45.0) as f32;
    let flakes = motion_blur(&flakes, radius * SPATIAL_SCALE, sigma * SPATIAL_SCALE, angle);
    let flipped = flakes.rot180();
    // For a grayscale image the reference's RGB-to-gray conversion is the identity.
    let lightened = p.map(|v| keep * v + (1.0 - keep) * v.max(v * 1.5 + 0.5));
    Plane::from_fn(p.w, p.h, |x, y| lightened.get(x, y) + flakes.get(x, y) + flipped.get(x, y))
}

/// The image, slightly darkened, plus a frost texture ([`frost_texture`], a procedural
/// stand-in for the reference's six photographs of frosted glass).
pub(super) fn frost(p: &Plane, s: usize, rng: &mut dyn RngCore) -> Plane {
    let (keep, amount) = FROST[s];
    let texture = frost_texture(p.w, p.h, rng);
    Plane::from_fn(p.w, p.h, |x, y| keep * p.get(x, y) + amount * texture.get(x, y))
}

/// A plasma-fractal haze added on top, then the result rescaled so the image's maximum keeps its
/// value where there is no haze. The fractal is drawn at 32x32 (the algorithm needs a power of
/// two, as in CIFAR-10-C) and its top-left 28x28 corner used, as the reference crops 224 of 256
/// for ImageNet.
pub(super) fn fog(p: &Plane, s: usize, rng: &mut dyn RngCore) -> Plane {
    let (thickness, decay) = FOG[s];
    let max = p.max();
    let haze = plasma_fractal(32, decay, rng).crop(p.w, p.h);
    let factor = max / (max + thickness);
    Plane::from_fn(p.w, p.h, |x, y| (p.get(x, y) + thickness * haze.get(x, y)) * factor)
}
