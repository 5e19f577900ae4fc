//! A procedural frost texture, standing in for the six frost photographs (`frost1.png` ...
//! `frost6.jpg`) that CIFAR-10-C crops after shrinking them to a fifth.
//!
//! The photographs are not redistributable here and are colour; what the corruption needs from
//! them is a bright, grainy, partly transparent layer with thin crystal structures. This
//! texture has those ingredients: a rough plasma fractal for the cloudy film, plus straight ice
//! needles with side branches at ±60° (the hexagonal habit of ice dendrites), softened by a
//! small blur as the downscaling would, and normalised to a fixed mean so each severity's
//! strength does not depend on the draw.

use std::f32::consts::PI;

use rand::RngCore;

use super::filter::gaussian_blur;
use super::plane::{Border, Plane};
use super::plasma::plasma_fractal;
use super::random::uniform;

/// Mean brightness of the texture. Chosen, not measured from the photographs: a frosted pane is
/// about half white.
const MEAN: f32 = 0.5;
/// Plasma decay: well below fog's 1.75-3 so the film is grainy rather than cloudy.
const FILM_DECAY: f64 = 1.5;
/// Needles per image and their length range in pixels.
const NEEDLES: usize = 10;
const NEEDLE_LEN: (f64, f64) = (5.0, 14.0);

/// A `w` x `h` frost layer in [0, 1] with mean about [`MEAN`].
pub(super) fn frost_texture(w: usize, h: usize, rng: &mut dyn RngCore) -> Plane {
    let size = w.max(h);
    let film = plasma_fractal(size, FILM_DECAY, rng).crop(w, h);
    let mut needles = Plane::zeros(w, h);
    for _ in 0..NEEDLES {
        let x = uniform(rng, 0.0, w as f64) as f32;
        let y = uniform(rng, 0.0, h as f64) as f32;
        let angle = uniform(rng, 0.0, PI as f64) as f32;
        let len = uniform(rng, NEEDLE_LEN.0, NEEDLE_LEN.1) as f32;
        draw_line(&mut needles, (x, y), angle, len);
        // Side branches every 2 px, alternating sides, shrinking towards the tip.
        let mut t = 2.0;
        let mut side = 1.0;
        while t < len {
            let (bx, by) = (x + t * angle.cos(), y + t * angle.sin());
            draw_line(&mut needles, (bx, by), angle + side * PI / 3.0, 0.4 * (len - t));
            side = -side;
            t += 2.0;
        }
    }
    let needles = gaussian_blur(&needles, 0.5, 4.0, Border::Clamp);
    let raw = Plane::from_fn(w, h, |x, y| 0.6 * film.get(x, y) + needles.get(x, y));
    let mean = raw.mean().max(1e-6);
    raw.map(|v| (v * MEAN / mean).clamp(0.0, 1.0))
}

/// Sets every pixel the segment passes through (half-pixel steps) to 1.
fn draw_line(p: &mut Plane, (x0, y0): (f32, f32), angle: f32, len: f32) {
    let (dx, dy) = (angle.cos(), angle.sin());
    let steps = (2.0 * len).ceil().max(0.0) as usize;
    for i in 0..=steps {
        let t = i as f32 * 0.5;
        let (x, y) = ((x0 + t * dx).round(), (y0 + t * dy).round());
        if x >= 0.0 && y >= 0.0 && (x as usize) < p.w && (y as usize) < p.h {
            p.set(x as usize, y as usize, 1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn texture_is_bright_varied_and_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..10 {
            let t = frost_texture(28, 28, &mut rng);
            assert!(t.px.iter().all(|v| (0.0..=1.0).contains(v)));
            // Clipping can only lower the mean.
            assert!(t.mean() > 0.4 && t.mean() <= MEAN + 1e-4, "{}", t.mean());
            let spread = t.max() - t.px.iter().copied().fold(1.0, f32::min);
            assert!(spread > 0.5, "{spread}");
        }
    }
}
