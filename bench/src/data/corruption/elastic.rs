//! Elastic transform: a small random affine warp, then a smooth random displacement field.
//!
//! The reference expresses its parameters as fractions of the image size (`IMSIZE`), so with
//! `IMSIZE = 28` they scale without further choices.

use rand::RngCore;

use super::filter::gaussian_blur;
use super::plane::{Border, Plane};
use super::random::uniform;

/// (displacement amplitude, displacement smoothing sigma, affine corner jitter), as fractions of
/// the image side.
const ELASTIC: [(f32, f32, f32); 5] = [(0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)];

pub(super) fn elastic_transform(p: &Plane, s: usize, rng: &mut dyn RngCore) -> Plane {
    let side = p.w.min(p.h) as f32;
    let (alpha, sigma, jitter) = (ELASTIC[s].0 * side, ELASTIC[s].1 * side, ELASTIC[s].2 * side);

    // Affine: three points around the centre (14 ± 9 for 28 px) each moved by up to `jitter`,
    // like `cv2.getAffineTransform` + `cv2.warpAffine` (bilinear, BORDER_REFLECT_101).
    let centre = (p.w / 2) as f32;
    let square = (p.w.min(p.h) / 3) as f32;
    let src = [(centre + square, centre + square), (centre + square, centre - square), (centre - square, centre - square)];
    let dst = src.map(|(x, y)| (x + uniform(rng, -jitter as f64, jitter as f64) as f32, y + uniform(rng, -jitter as f64, jitter as f64) as f32));
    // warpAffine samples the source at the inverse map of each destination pixel.
    let inverse = solve_affine(&dst, &src).unwrap_or([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);
    let warped = Plane::from_fn(p.w, p.h, |x, y| {
        let (x, y) = (x as f32, y as f32);
        let sx = inverse[0][0] * x + inverse[0][1] * y + inverse[0][2];
        let sy = inverse[1][0] * x + inverse[1][1] * y + inverse[1][2];
        p.bilinear(sx, sy, Border::Reflect101)
    });

    // Displacement: uniform noise smoothed by a Gaussian (truncate 3, reflect), times alpha;
    // sampled bilinearly like `scipy.ndimage.map_coordinates(order=1, mode='reflect')`.
    let mut field = || {
        let noise = Plane::from_fn(p.w, p.h, |_, _| uniform(rng, -1.0, 1.0) as f32);
        gaussian_blur(&noise, sigma, 3.0, Border::Symmetric).map(|v| v * alpha)
    };
    let dx = field();
    let dy = field();
    Plane::from_fn(p.w, p.h, |x, y| warped.bilinear(x as f32 + dx.get(x, y), y as f32 + dy.get(x, y), Border::Symmetric))
}

/// The affine map `[[a, b, c], [d, e, f]]` taking each `from[i]` to `to[i]` (Cramer's rule);
/// `None` when the three points are collinear.
fn solve_affine(from: &[(f32, f32); 3], to: &[(f32, f32); 3]) -> Option<[[f32; 3]; 2]> {
    let det3 = |m: [[f32; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let a = from.map(|(x, y)| [x, y, 1.0]);
    let det = det3(a);
    if det.abs() < 1e-6 {
        return None;
    }
    let row = |rhs: [f32; 3]| {
        let mut out = [0.0; 3];
        for (col, o) in out.iter_mut().enumerate() {
            let mut m = a;
            for r in 0..3 {
                m[r][col] = rhs[r];
            }
            *o = det3(m) / det;
        }
        out
    };
    Some([row(to.map(|t| t.0)), row(to.map(|t| t.1))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_an_affine_map() {
        let from = [(23.0, 23.0), (23.0, 5.0), (5.0, 5.0)];
        // x' = 2x + y + 1, y' = -x + 3
        let to = from.map(|(x, y)| (2.0 * x + y + 1.0, -x + 3.0));
        let m = solve_affine(&from, &to).unwrap();
        let want = [[2.0, 1.0, 1.0], [-1.0, 0.0, 3.0]];
        for r in 0..2 {
            for c in 0..3 {
                assert!((m[r][c] - want[r][c]).abs() < 1e-4, "{m:?}");
            }
        }
        assert!(solve_affine(&[(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)], &to).is_none());
    }
}
