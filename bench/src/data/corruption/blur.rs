//! Blur corruptions: defocus, glass, motion and zoom.

use rand::RngCore;

use super::filter::{clipped_zoom, correlate, gaussian_blur, motion_blur as magick_motion_blur, separable};
use super::plane::{Border, Plane, SPATIAL_SCALE};
use super::random::{int_in, uniform};

/// (disk radius, anti-alias sigma) in pixels, CIFAR-10-C values kept unscaled: the disk is drawn
/// on the pixel lattice, where radii 0.3-0.5 are one pixel, 1 is a plus and 1.5 a 3x3 square.
/// Scaled by 28/32, radius 1 would fall to 0.875, a single pixel, and severity 4 would blur less
/// than severity 3; keeping the lattice shapes keeps the original kernels exactly.
const DEFOCUS: [(f32, f32); 5] = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)];

/// (Gaussian sigma at 32 px, shuffle iterations); the shuffle distance is 1 pixel at every
/// severity, which cannot shrink further.
const GLASS: [(f32, usize); 5] = [(0.05, 1), (0.25, 1), (0.4, 1), (0.25, 2), (0.4, 2)];
const GLASS_DELTA: i64 = 1;

/// ImageMagick (radius, sigma) at 32 px.
const MOTION: [(f32, f32); 5] = [(6.0, 1.0), (6.0, 1.5), (6.0, 2.0), (8.0, 2.0), (9.0, 2.5)];

/// Largest zoom factor; the reference averages zooms 1.00, 1.01, ... up to this.
const ZOOM_MAX: [f32; 5] = [1.05, 1.10, 1.15, 1.20, 1.25];

/// Convolution with an anti-aliased disk (the reference's `disk` + `cv2.filter2D`).
pub(super) fn defocus_blur(p: &Plane, s: usize) -> Plane {
    let (radius, alias_sigma) = DEFOCUS[s];
    correlate(p, &disk_kernel(radius, alias_sigma), Border::Reflect101)
}

/// Lattice disk `x² + y² <= r²`, normalised, then blurred by a 3x3 Gaussian (`cv2.GaussianBlur`
/// with `ksize=(3, 3)`). The reference uses a 17x17 window; every cell beyond
/// `ceil(r) + 1` is zero for the radii used here, so a smaller window gives the same kernel.
fn disk_kernel(radius: f32, alias_sigma: f32) -> Plane {
    let r = radius.ceil() as isize + 1;
    let size = (2 * r + 1) as usize;
    let mut disk = Plane::from_fn(size, size, |x, y| {
        let (dx, dy) = (x as isize - r, y as isize - r);
        if ((dx * dx + dy * dy) as f32) <= radius * radius { 1.0 } else { 0.0 }
    });
    let sum: f32 = disk.px.iter().sum();
    disk.px.iter_mut().for_each(|v| *v /= sum);
    let taps: Vec<f32> = [-1.0f32, 0.0, 1.0].iter().map(|d| (-(d * d) / (2.0 * alias_sigma * alias_sigma)).exp()).collect();
    let total: f32 = taps.iter().sum();
    let taps: Vec<f32> = taps.iter().map(|t| t / total).collect();
    separable(&disk, &taps, Border::Reflect101)
}

/// Blur, quantise to bytes, swap each pixel with a random neighbour (repeated), blur again.
pub(super) fn glass_blur(p: &Plane, s: usize, rng: &mut dyn RngCore) -> Plane {
    let (sigma32, iterations) = GLASS[s];
    let sigma = sigma32 * SPATIAL_SCALE;
    // The reference stores the first blur as uint8 (truncating) before shuffling.
    let mut x = gaussian_blur(p, sigma, 4.0, Border::Clamp).map(|v| (v.clamp(0.0, 1.0) * 255.0).floor() / 255.0);
    let d = GLASS_DELTA as usize;
    for _ in 0..iterations {
        // Bottom-right to top-left, skipping a `d`-wide frame so the neighbour is inside.
        for h in (d + 1..=x.h - d).rev() {
            for w in (d + 1..=x.w - d).rev() {
                // numpy's randint(-d, d) excludes d: offsets are -1 or 0, so pixels drift up
                // and left. Kept, since it is what the published benchmark contains.
                let dx = int_in(rng, -GLASS_DELTA, GLASS_DELTA);
                let dy = int_in(rng, -GLASS_DELTA, GLASS_DELTA);
                let (h2, w2) = ((h as i64 + dy) as usize, (w as i64 + dx) as usize);
                let (a, b) = (x.get(w, h), x.get(w2, h2));
                x.set(w, h, b);
                x.set(w2, h2, a);
            }
        }
    }
    gaussian_blur(&x, sigma, 4.0, Border::Clamp)
}

/// ImageMagick's motion blur in a random direction within ±45° of horizontal.
pub(super) fn motion_blur(p: &Plane, s: usize, rng: &mut dyn RngCore) -> Plane {
    let (radius, sigma) = MOTION[s];
    let angle = uniform(rng, -45.0, 45.0) as f32;
    magick_motion_blur(p, radius * SPATIAL_SCALE, sigma * SPATIAL_SCALE, angle)
}

/// Mean of the image and its centre zooms by 1.00, 1.01, ..., `ZOOM_MAX` (zoom factors are
/// ratios and need no rescaling).
pub(super) fn zoom_blur(p: &Plane, s: usize) -> Plane {
    let steps = ((ZOOM_MAX[s] - 1.0) * 100.0).round() as usize;
    let mut acc = p.clone();
    for i in 0..=steps {
        let z = clipped_zoom(p, 1.0 + 0.01 * i as f32);
        acc.px.iter_mut().zip(&z.px).for_each(|(a, b)| *a += b);
    }
    let n = (steps + 2) as f32;
    acc.map(|v| v / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_kernels_have_the_lattice_shapes() {
        // Radius 1.5 with almost no anti-aliasing: the 3x3 square, 1/9 each.
        let k = disk_kernel(1.5, 0.1);
        let r = k.w / 2;
        assert!((k.get(r + 1, r + 1) - 1.0 / 9.0).abs() < 1e-4, "{k:?}");
        assert!(k.get(r + 2, r) < 1e-4);
        // Radius 1: the plus; its diagonal stays near zero.
        let k = disk_kernel(1.0, 0.2);
        let r = k.w / 2;
        assert!((k.get(r + 1, r) - 0.2).abs() < 1e-3 && k.get(r + 1, r + 1) < 1e-3, "{k:?}");
        for k in DEFOCUS.map(|(r, a)| disk_kernel(r, a)) {
            assert!((k.px.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
}
