//! `exp` over slices, vectorisable in f32: softmax and QuickGELU spend most of their time in
//! it, and glibc's scalar `exp` on f64-converted values was about 4.5% of a ViT-B/32 forward
//! (`perf`, BENCHMARKS.md).
//!
//! The f32 version is branch-free so that the compiler vectorises the loop: `x = n ln2 + r`
//! with `n` rounded to nearest by the 1.5·2^23 trick and `|r| <= ln2 / 2`, `e^r` by its degree-7
//! Taylor polynomial (truncation below 1e-8 relative), and `2^n` built from exponent bits in
//! two halves so that every `n` from -126 to 128 stays a normal number. The result is within a
//! few units in the last place of the correctly rounded value (tested against f64 `exp`);
//! inputs above ln(f32::MAX) give infinity, inputs below about -87.3 give 0 (the subnormal
//! range is flushed), NaN stays NaN. f64 keeps the standard library's `exp`.

use candle_core::WithDType;

/// Element types with an in-place slice `exp`.
pub(crate) trait Exp: WithDType {
    /// Replaces every value `v` by `e^v`.
    fn exp_in_place(values: &mut [Self]);
}

impl Exp for f64 {
    fn exp_in_place(values: &mut [Self]) {
        values.iter_mut().for_each(|v| *v = v.exp());
    }
}

impl Exp for f32 {
    fn exp_in_place(values: &mut [Self]) {
        values.iter_mut().for_each(|v| *v = exp_f32(*v));
    }
}

/// Below this, `e^x` is subnormal or zero in f32; the result is flushed to 0.
const LOWEST: f32 = -87.33;
/// Just above ln(f32::MAX): `n` reaches 128 and the product overflows to infinity as it should.
const HIGHEST: f32 = 88.73;

#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
    // ln 2 in two parts: n * LN2_HI is exact for |n| <= 128, LN2_LO carries the rest.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Comparisons rather than min/max, so that NaN passes through.
    let xc = if x < LOWEST {
        LOWEST
    } else if x > HIGHEST {
        HIGHEST
    } else {
        x
    };
    let t = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let half = ni >> 1;
    let scale_a = f32::from_bits((half.wrapping_add(127) as u32).wrapping_shl(23));
    let scale_b = f32::from_bits((ni.wrapping_sub(half).wrapping_add(127) as u32).wrapping_shl(23));
    let y = p * scale_a * scale_b;
    if x < LOWEST {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulp_error(got: f32, x: f32) -> f64 {
        let want = (x as f64).exp();
        let ulp = f64::from(f32::EPSILON) * want.abs().max(f64::from(f32::MIN_POSITIVE));
        (f64::from(got) - want).abs() / ulp
    }

    /// Every input on a fine grid over the normal range is within 3 ulp of f64's `exp`.
    #[test]
    fn is_within_a_few_ulp_of_f64_exp() {
        let steps = 400_000;
        let mut xs: Vec<f32> =
            (0..=steps).map(|i| LOWEST + (HIGHEST - 0.01 - LOWEST) * i as f32 / steps as f32).collect();
        xs.extend([0.0, -0.0, 1.0, -1.0, 1e-8, -1e-8, 0.5, 88.7, -87.3]);
        let mut ys = xs.clone();
        f32::exp_in_place(&mut ys);
        let worst = xs.iter().zip(&ys).map(|(x, y)| (ulp_error(*y, *x), *x)).fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
        assert!(worst.0 <= 3.0, "{} ulp at x = {}", worst.0, worst.1);
        assert_eq!(ys[steps + 1], 1.0, "exp(0) is exactly 1");
    }

    #[test]
    fn overflows_flushes_and_keeps_nan() {
        let mut v = [89.0f32, 1000.0, f32::INFINITY, -88.0, -1000.0, f32::NEG_INFINITY, f32::NAN];
        f32::exp_in_place(&mut v);
        assert!(v[..3].iter().all(|y| *y == f32::INFINITY), "{v:?}");
        assert!(v[3..6].iter().all(|y| *y == 0.0), "{v:?}");
        assert!(v[6].is_nan());
    }
}
