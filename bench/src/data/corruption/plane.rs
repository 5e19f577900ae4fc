//! A float image in [0, 1] and the sampling rules (borders, bilinear) the corruptions share.
//!
//! The reference implementation mixes OpenCV, SciPy, scikit-image and ImageMagick, each with its
//! own default border; [`Border`] names which one a corruption follows so the choice is visible.

use super::super::image28::{Image28, PIXELS, SIDE};

/// Lengths in pixels (blur radii and sigmas) are taken from the CIFAR-10-C definitions for 32x32
/// images and multiplied by this to keep the same size relative to a 28x28 image.
pub(super) const SPATIAL_SCALE: f32 = SIDE as f32 / 32.0;

/// How pixels outside the image are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Border {
    /// Repeat the edge pixel: scikit-image `mode='nearest'`, ImageMagick's edge virtual pixels.
    Clamp,
    /// `dcb|abcd|cba`: OpenCV's default `BORDER_REFLECT_101`.
    Reflect101,
    /// `dcba|abcd|dcba`: SciPy/scikit-image `mode='reflect'`.
    Symmetric,
}

/// Row-major grayscale plane; values are nominally in [0, 1] but may leave that range between
/// steps (the reference clips only at the end).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Plane {
    pub w: usize,
    pub h: usize,
    pub px: Vec<f32>,
}

impl Plane {
    pub fn zeros(w: usize, h: usize) -> Self {
        Plane { w, h, px: vec![0.0; w * h] }
    }

    pub fn from_fn(w: usize, h: usize, mut f: impl FnMut(usize, usize) -> f32) -> Self {
        let mut px = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                px.push(f(x, y));
            }
        }
        Plane { w, h, px }
    }

    pub fn from_image(img: &Image28) -> Self {
        Plane { w: SIDE, h: SIDE, px: img.iter().map(|&v| v as f32 / 255.0).collect() }
    }

    /// Clips to [0, 1] and rounds to bytes. The reference truncates (`np.uint8`); rounding
    /// avoids its systematic -0.5 bias and is the only change. Planes of another size (never
    /// produced by the corruptions) are read with clamped borders.
    pub fn to_image(&self) -> Image28 {
        let mut out = [0u8; PIXELS];
        for (i, o) in out.iter_mut().enumerate() {
            let v = self.at((i % SIDE) as isize, (i / SIDE) as isize, Border::Clamp);
            *o = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
        out
    }

    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.px[y * self.w + x]
    }

    pub fn set(&mut self, x: usize, y: usize, v: f32) {
        self.px[y * self.w + x] = v;
    }

    /// The pixel at integer coordinates, folding outside ones back according to `border`.
    pub fn at(&self, x: isize, y: isize, border: Border) -> f32 {
        self.get(fold(x, self.w, border), fold(y, self.h, border))
    }

    /// Bilinear interpolation at continuous pixel coordinates (pixel centres at integers).
    pub fn bilinear(&self, x: f32, y: f32, border: Border) -> f32 {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (xi, yi) = (x0 as isize, y0 as isize);
        let top = self.at(xi, yi, border) * (1.0 - fx) + self.at(xi + 1, yi, border) * fx;
        let bottom = self.at(xi, yi + 1, border) * (1.0 - fx) + self.at(xi + 1, yi + 1, border) * fx;
        top * (1.0 - fy) + bottom * fy
    }

    pub fn map(&self, mut f: impl FnMut(f32) -> f32) -> Self {
        Plane { w: self.w, h: self.h, px: self.px.iter().map(|&v| f(v)).collect() }
    }

    pub fn mean(&self) -> f32 {
        self.px.iter().sum::<f32>() / self.px.len().max(1) as f32
    }

    pub fn max(&self) -> f32 {
        self.px.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }

    /// The top-left `w` x `h` window (used to cut a power-of-two fractal down to 28x28).
    pub fn crop(&self, w: usize, h: usize) -> Self {
        Plane::from_fn(w.min(self.w), h.min(self.h), |x, y| self.get(x, y))
    }

    /// Rotated by 180 degrees (`np.rot90(k=2)`).
    pub fn rot180(&self) -> Self {
        let mut px = self.px.clone();
        px.reverse();
        Plane { w: self.w, h: self.h, px }
    }
}

/// Maps an index outside `0..n` back inside; total for every `n >= 1`.
fn fold(i: isize, n: usize, border: Border) -> usize {
    let n = n as isize;
    if (0..n).contains(&i) {
        return i as usize;
    }
    if n == 1 {
        return 0;
    }
    let folded = match border {
        Border::Clamp => i.clamp(0, n - 1),
        Border::Reflect101 => {
            let period = 2 * (n - 1);
            let m = i.rem_euclid(period);
            if m < n { m } else { period - m }
        }
        Border::Symmetric => {
            let period = 2 * n;
            let m = i.rem_euclid(period);
            if m < n { m } else { period - 1 - m }
        }
    };
    folded as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borders_fold_like_their_libraries() {
        // n = 4, indices -3..7: the row "abcd" extended to both sides.
        let cases = [
            (Border::Clamp, [0, 0, 0, 0, 1, 2, 3, 3, 3, 3]),
            (Border::Reflect101, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]),
            (Border::Symmetric, [2, 1, 0, 0, 1, 2, 3, 3, 2, 1]),
        ];
        for (border, want) in cases {
            let got: Vec<usize> = (-3..7).map(|i| fold(i, 4, border)).collect();
            assert_eq!(got, want, "{border:?}");
        }
        assert_eq!(fold(-5, 1, Border::Reflect101), 0);
    }

    #[test]
    fn bilinear_interpolates_between_centres() {
        let p = Plane::from_fn(2, 2, |x, y| (x + 2 * y) as f32);
        assert_eq!(p.bilinear(0.5, 0.5, Border::Clamp), 1.5);
        assert_eq!(p.bilinear(1.0, 0.0, Border::Clamp), 1.0);
        assert_eq!(p.bilinear(-1.0, 0.0, Border::Clamp), 0.0);
    }

    #[test]
    fn image_round_trip_rounds_and_clips() {
        let mut img = [0u8; PIXELS];
        img[7] = 200;
        let p = Plane::from_image(&img);
        assert_eq!(p.to_image(), img);
        assert_eq!(p.map(|v| v * 2.0 - 0.1).to_image()[7], 255);
        assert_eq!(p.map(|v| v - 1.0).to_image()[7], 0);
        assert_eq!(p.map(|v| v + 0.3 / 255.0).to_image()[7], 200);
    }
}
