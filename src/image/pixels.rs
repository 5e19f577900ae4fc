//! The 8-bit pixels CLIP preprocessing starts from, for every kind of decoded image, as
//! transformers' CLIPImageProcessor gets them from PIL (`convert_to_rgb`), with one deliberate
//! difference (16-bit greyscale, below).
//!
//! - Transparency (RGBA, grey+alpha, a palette or colour key with transparency) is composited
//!   onto white, rounding as PIL's `alpha_composite` does: `(c·a + 255·(255−a) + 127) / 255`.
//!   A transparent pixel is white whatever colour it stores.
//! - 16-bit colour keeps the high byte (`v >> 8`), as PIL's PNG and TIFF decoders do; the
//!   `image` crate's own conversion rounds (`(v + 128) / 257`) and differs on a quarter of values.
//! - 16-bit greyscale also keeps the high byte. PIL opens it as mode `I;16` and its RGB
//!   conversion *clips* at 255, which turns a real 16-bit greyscale photo almost white; cliptta
//!   maps it like 16-bit colour instead. `tests/fixtures/make_format_lake.py` records both.
//! - Greyscale stays one channel (the caller repeats it), which equals converting to RGB.
//!
//! Checked against PIL and transformers on every format and mode in `tests/fixtures/formats/`
//! (`tests/it/formats.rs`).

use std::borrow::Cow;

use image::DynamicImage;

/// Interleaved 8-bit pixels and their channel count (1 for greyscale, 3 for RGB).
pub struct Pixels<'a> {
    /// Row-major samples, `channels` a pixel.
    pub data: Cow<'a, [u8]>,
    /// 1 or 3.
    pub channels: usize,
}

/// `c` over white with opacity `a`, rounded as PIL's `alpha_composite`.
fn over_white(c: u8, a: u8) -> u8 {
    let (c, a) = (u32::from(c), u32::from(a));
    ((c * a + 255 * (255 - a) + 127) / 255) as u8
}

fn high_byte(v: u16) -> u8 {
    (v >> 8) as u8
}

/// Pixels with an alpha sample last: each colour sample composited onto white.
fn composite<const N: usize>(samples: impl Iterator<Item = [u8; N]>) -> Vec<u8> {
    samples.flat_map(|p| {
        let a = p[N - 1];
        let mut out = [0u8; 3];
        for (o, c) in out.iter_mut().zip(&p[..N - 1]) {
            *o = over_white(*c, a);
        }
        out.into_iter().take(N - 1)
    })
    .collect()
}

/// The 8-bit greyscale or RGB pixels of `img` (see the module docs).
pub fn clip_pixels(img: &DynamicImage) -> Pixels<'_> {
    let (data, channels): (Cow<[u8]>, usize) = match img {
        DynamicImage::ImageLuma8(g) => (Cow::Borrowed(g.as_raw()), 1),
        DynamicImage::ImageRgb8(rgb) => (Cow::Borrowed(rgb.as_raw()), 3),
        DynamicImage::ImageLumaA8(la) => (Cow::Owned(composite(la.pixels().map(|p| p.0))), 1),
        DynamicImage::ImageRgba8(rgba) => (Cow::Owned(composite(rgba.pixels().map(|p| p.0))), 3),
        DynamicImage::ImageLuma16(g) => (Cow::Owned(g.as_raw().iter().copied().map(high_byte).collect()), 1),
        DynamicImage::ImageRgb16(rgb) => (Cow::Owned(rgb.as_raw().iter().copied().map(high_byte).collect()), 3),
        DynamicImage::ImageLumaA16(la) => (Cow::Owned(composite(la.pixels().map(|p| p.0.map(high_byte)))), 1),
        DynamicImage::ImageRgba16(rgba) => (Cow::Owned(composite(rgba.pixels().map(|p| p.0.map(high_byte)))), 3),
        // Float images (none of the enabled decoders makes them today): `image`'s conversion
        // to 8 bits, then the same compositing.
        other => (Cow::Owned(composite(other.to_rgba8().pixels().map(|p| p.0))), 3),
    };
    Pixels { data, channels }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compositing_rounds_as_pil() {
        assert_eq!(over_white(0, 0), 255);
        assert_eq!(over_white(0, 255), 0);
        assert_eq!(over_white(200, 255), 200);
        // 100·128 + 255·127 + 127 = 45 312; / 255 = 177 (177.69 rounded down after the +127).
        assert_eq!(over_white(100, 128), 177);
        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_raw(2, 1, vec![10, 20, 30, 255, 10, 20, 30, 0]).unwrap());
        let p = clip_pixels(&rgba);
        assert_eq!((p.channels, p.data.as_ref()), (3, &[10, 20, 30, 255, 255, 255][..]));
        let g16 = DynamicImage::ImageLuma16(image::ImageBuffer::from_raw(2, 1, vec![0x1234u16, 0x00ff]).unwrap());
        let p = clip_pixels(&g16);
        assert_eq!((p.channels, p.data.as_ref()), (1, &[0x12, 0][..]));
    }
}
