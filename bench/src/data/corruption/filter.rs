//! Linear filters and resampling shared by several corruptions, each matching the library call
//! the reference makes (named on each function).

use super::plane::{Border, Plane};

/// Normalised 1-D Gaussian taps with radius `int(truncate * sigma + 0.5)`, as
/// `scipy.ndimage.gaussian_filter` (which scikit-image's `gaussian` calls) builds them.
pub(super) fn gaussian_taps(sigma: f32, truncate: f32) -> Vec<f32> {
    let radius = (truncate * sigma + 0.5) as isize;
    let taps: Vec<f32> = (-radius..=radius).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let sum: f32 = taps.iter().sum();
    taps.into_iter().map(|t| t / sum).collect()
}

/// Correlates rows then columns with the same odd-length taps.
pub(super) fn separable(p: &Plane, taps: &[f32], border: Border) -> Plane {
    let r = (taps.len() / 2) as isize;
    let rows = Plane::from_fn(p.w, p.h, |x, y| {
        taps.iter().enumerate().map(|(k, t)| t * p.at(x as isize + k as isize - r, y as isize, border)).sum()
    });
    Plane::from_fn(p.w, p.h, |x, y| {
        taps.iter().enumerate().map(|(k, t)| t * rows.at(x as isize, y as isize + k as isize - r, border)).sum()
    })
}

/// `skimage.filters.gaussian(img, sigma, mode, truncate)`; `sigma <= 0` is the identity (SciPy
/// returns the input for a zero-width kernel).
pub(super) fn gaussian_blur(p: &Plane, sigma: f32, truncate: f32, border: Border) -> Plane {
    if sigma <= 0.0 {
        return p.clone();
    }
    separable(p, &gaussian_taps(sigma, truncate), border)
}

/// `cv2.filter2D`: correlation with an odd-sized square kernel (`kernel.w == kernel.h`).
pub(super) fn correlate(p: &Plane, kernel: &Plane, border: Border) -> Plane {
    let r = (kernel.w / 2) as isize;
    Plane::from_fn(p.w, p.h, |x, y| {
        let mut acc = 0.0;
        for ky in 0..kernel.h {
            for kx in 0..kernel.w {
                let k = kernel.get(kx, ky);
                if k != 0.0 {
                    acc += k * p.at(x as isize + kx as isize - r, y as isize + ky as isize - r, border);
                }
            }
        }
        acc
    })
}

/// ImageMagick's `MotionBlurImage(radius, sigma, angle)`: a one-sided blur, each pixel the
/// Gaussian-weighted mean of the `2 * ceil(radius) + 1` pixels behind it along `angle` (degrees),
/// at offsets rounded to whole pixels, with edge pixels repeated.
pub(super) fn motion_blur(p: &Plane, radius: f32, sigma: f32, angle_deg: f32) -> Plane {
    let width = 2 * radius.ceil().max(0.0) as usize + 1;
    let mut taps: Vec<f32> = (0..width).map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp()).collect();
    let sum: f32 = taps.iter().sum();
    taps.iter_mut().for_each(|t| *t /= sum);
    let (sin, cos) = angle_deg.to_radians().sin_cos();
    // ImageMagick rounds with ceil(v - 0.5).
    let offsets: Vec<(isize, isize)> =
        (0..width).map(|i| ((i as f32 * cos - 0.5).ceil() as isize, (i as f32 * sin - 0.5).ceil() as isize)).collect();
    Plane::from_fn(p.w, p.h, |x, y| {
        taps.iter()
            .zip(&offsets)
            .map(|(t, (dx, dy))| t * p.at(x as isize + dx, y as isize + dy, Border::Clamp))
            .sum()
    })
}

/// The reference's `clipped_zoom`: crop the central `ceil(h / zoom)` square, enlarge it by
/// `zoom` with `scipy.ndimage.zoom(order=1)` (corner-aligned bilinear), and cut the central
/// `h` x `w` window back out. `zoom >= 1`; square planes only, as in the reference.
pub(super) fn clipped_zoom(p: &Plane, zoom: f32) -> Plane {
    let h = p.h;
    let ch = ((h as f32 / zoom).ceil() as usize).clamp(1, h);
    let top = (h - ch) / 2;
    let out = ((ch as f32 * zoom).round() as usize).max(h);
    let trim = (out - h) / 2;
    // scipy maps output index o to input o * (ch - 1) / (out - 1).
    let scale = if out > 1 { (ch - 1) as f32 / (out - 1) as f32 } else { 0.0 };
    Plane::from_fn(p.w, h, |x, y| {
        let sx = top as f32 + (x + trim) as f32 * scale;
        let sy = top as f32 + (y + trim) as f32 * scale;
        p.bilinear(sx, sy, Border::Clamp)
    })
}

/// Pillow's `Image.resize(size, Image.BOX)`: every source pixel whose centre falls in an output
/// pixel's footprint counts once (when enlarging, the footprint holds exactly one centre, so this
/// is nearest-neighbour).
pub(super) fn resize_box(p: &Plane, w: usize, h: usize) -> Plane {
    let cols = box_weights(p.w, w);
    let rows = box_weights(p.h, h);
    let horizontal = Plane::from_fn(w, p.h, |x, y| cols[x].iter().map(|&(i, wt)| wt * p.get(i, y)).sum());
    Plane::from_fn(w, h, |x, y| rows[y].iter().map(|&(i, wt)| wt * horizontal.get(x, i)).sum())
}

/// Per output index, the contributing input indices and their weights (summing to 1).
fn box_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = n_in as f32 / n_out as f32;
    let support = scale.max(1.0);
    (0..n_out)
        .map(|o| {
            let centre = (o as f32 + 0.5) * scale;
            let inside: Vec<usize> = (0..n_in)
                .filter(|&i| {
                    let d = (i as f32 + 0.5 - centre) / support;
                    (-0.5..0.5).contains(&d)
                })
                .collect();
            // Never empty for n_in >= 1 (some centre is within 0.5 * support >= 0.5), but fall
            // back to the nearest pixel rather than divide by zero.
            let inside = if inside.is_empty() { vec![(centre as usize).min(n_in - 1)] } else { inside };
            let wt = 1.0 / inside.len() as f32;
            inside.into_iter().map(|i| (i, wt)).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn impulse() -> Plane {
        let mut p = Plane::zeros(9, 9);
        p.set(4, 4, 1.0);
        p
    }

    #[test]
    fn gaussian_taps_match_scipy() {
        // scipy.ndimage._gaussian_kernel1d(1.0, 0, 4) (truncate 4, radius 4).
        let t = gaussian_taps(1.0, 4.0);
        assert_eq!(t.len(), 9);
        let want = [0.00013383, 0.00443186, 0.05399112, 0.24197144, 0.39894346];
        for (i, w) in want.iter().enumerate() {
            assert!((t[i] - w).abs() < 1e-5 && (t[8 - i] - w).abs() < 1e-5, "{t:?}");
        }
    }

    #[test]
    fn blurs_preserve_mass_away_from_borders() {
        let p = impulse();
        let cases = [
            ("gaussian", gaussian_blur(&p, 0.8, 4.0, Border::Clamp)),
            ("motion", motion_blur(&p, 2.0, 1.5, 30.0)),
            ("correlate", correlate(&p, &Plane::from_fn(3, 3, |_, _| 1.0 / 9.0), Border::Reflect101)),
        ];
        for (name, out) in cases {
            let mass: f32 = out.px.iter().sum();
            assert!((mass - 1.0).abs() < 1e-4, "{name}: {mass}");
            assert!(out.get(4, 4) < 1.0, "{name} did not spread");
        }
    }

    #[test]
    fn motion_blur_spreads_along_one_side_only() {
        // Angle 0: each pixel averages itself and pixels to its right, so an impulse spreads left.
        let out = motion_blur(&impulse(), 2.0, 1.0, 0.0);
        assert!(out.get(3, 4) > 0.0 && out.get(2, 4) > 0.0);
        assert_eq!(out.get(5, 4), 0.0);
        assert_eq!(out.get(4, 3), 0.0);
    }

    #[test]
    fn zoom_of_one_is_identity_and_zoom_enlarges() {
        let p = Plane::from_fn(8, 8, |x, y| (x * 8 + y) as f32);
        assert_eq!(clipped_zoom(&p, 1.0), p);
        let z = clipped_zoom(&impulse(), 2.0);
        assert!(z.px.iter().filter(|&&v| v > 0.0).count() > 1);
    }

    #[test]
    fn box_resize_averages_down_and_repeats_up() {
        let p = Plane::from_fn(4, 1, |x, _| x as f32);
        assert_eq!(resize_box(&p, 2, 1).px, vec![0.5, 2.5]);
        assert_eq!(resize_box(&resize_box(&p, 2, 1), 4, 1).px, vec![0.5, 0.5, 2.5, 2.5]);
        // 28 -> 18 -> 28 keeps the mean of a constant image.
        let c = Plane::from_fn(28, 28, |_, _| 0.25);
        assert!((resize_box(&resize_box(&c, 18, 18), 28, 28).mean() - 0.25).abs() < 1e-6);
    }
}
