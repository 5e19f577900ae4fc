//! Decoding raw bytes (JPEG, PNG, WebP, GIF, BMP, TIFF) under explicit limits, by content
//! (not extension), with EXIF orientation applied; an animated GIF gives its first frame.
//!
//! Every failure is a typed [`Error`]: [`Error::TooLarge`] when a limit is exceeded (checked
//! before the pixels are allocated), [`Error::Decode`] for empty, unknown, corrupt or truncated
//! input. Nothing here panics on user bytes. Decoding is CPU work: async callers run
//! [`decode_and_preprocess`] on a blocking thread (`tokio::task::spawn_blocking`).

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

use super::preprocess::preprocess;
use crate::error::{Error, Result};
use crate::model::PreprocessorConfig;

/// Limits applied before and while decoding one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted encoded size in bytes.
    pub max_bytes: u64,
    /// Largest accepted `width * height`.
    pub max_pixels: u64,
    /// Largest accepted width or height.
    pub max_dimension: u32,
}

impl Default for DecodeLimits {
    /// 64 MiB, 64 megapixels, 16384 pixels a side.
    fn default() -> Self {
        Self { max_bytes: 64 << 20, max_pixels: 64_000_000, max_dimension: 16_384 }
    }
}

/// Decodes one image, refusing anything over `limits`.
///
/// A panic inside a third-party decoder (a bug it has on some malformed input) is caught and
/// becomes a decode error for the row, so one bad file cannot end a job.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<DynamicImage> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_unguarded(bytes, limits))).unwrap_or_else(|panic| {
        let message = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
        Err(Error::Decode(format!("the decoder panicked: {message}")))
    })
}

fn decode_unguarded(bytes: &[u8], limits: &DecodeLimits) -> Result<DynamicImage> {
    let size = bytes.len() as u64;
    if size > limits.max_bytes {
        return Err(Error::TooLarge { what: "size in bytes", actual: size, limit: limits.max_bytes });
    }
    if bytes.is_empty() {
        return Err(Error::Decode("empty input (0 bytes)".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Decode(format!("cannot read input: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::Decode("unrecognised image format".into()));
    }
    let mut reader = reader;
    // The dimensions are checked from the header below, with a message naming the limit; the
    // decoder's own limit bounds what it allocates. Four bytes a pixel (RGBA8) plus headroom
    // for decoders that keep a second buffer.
    let mut decoder_limits = Limits::default();
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(image_error)?;
    let (w, h) = decoder.dimensions();
    check_dimensions(w, h, limits)?;
    // EXIF orientation is applied before resizing, as PIL's `exif_transpose` does; an
    // unreadable EXIF block leaves the image as stored rather than failing the row.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(image_error)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Decodes and applies CLIP preprocessing: `3 * crop * crop` floats, channel-major.
pub fn decode_and_preprocess(bytes: &[u8], limits: &DecodeLimits, cfg: &PreprocessorConfig) -> Result<Vec<f32>> {
    let img = decode(bytes, limits)?;
    preprocess(&img, cfg)
}

fn check_dimensions(w: u32, h: u32, limits: &DecodeLimits) -> Result<()> {
    if w > limits.max_dimension {
        return Err(Error::TooLarge { what: "width", actual: w.into(), limit: limits.max_dimension.into() });
    }
    if h > limits.max_dimension {
        return Err(Error::TooLarge { what: "height", actual: h.into(), limit: limits.max_dimension.into() });
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        return Err(Error::TooLarge { what: "pixel count", actual: pixels, limit: limits.max_pixels });
    }
    if pixels == 0 {
        return Err(Error::Decode(format!("image has no pixels ({w}x{h})")));
    }
    Ok(())
}

fn image_error(e: image::ImageError) -> Error {
    match e {
        image::ImageError::Limits(l) => Error::DecoderLimit(l.to_string()),
        other => Error::Decode(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: &DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn sample(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128])))
    }

    #[test]
    fn decodes_every_supported_format() {
        use image::ImageFormat::*;
        for format in [Png, Jpeg, WebP, Gif, Bmp, Tiff] {
            let img = if format == WebP || format == Gif {
                DynamicImage::ImageRgba8(sample(20, 10).to_rgba8())
            } else {
                sample(20, 10)
            };
            let bytes = encode(&img, format);
            let out = decode(&bytes, &DecodeLimits::default()).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!((out.width(), out.height()), (20, 10), "{format:?}");
        }
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let png = encode(&sample(16, 16), image::ImageFormat::Png);
        let jpeg = encode(&sample(16, 16), image::ImageFormat::Jpeg);
        let mut corrupt_jpeg = jpeg.clone();
        for b in corrupt_jpeg.iter_mut().skip(20) {
            *b = 0x5a;
        }
        let small = DecodeLimits { max_bytes: 1 << 20, max_pixels: 100, max_dimension: 1000 };
        let cases: Vec<(&str, Vec<u8>, DecodeLimits, &str)> = vec![
            ("empty", vec![], DecodeLimits::default(), "decode_error"),
            ("text", b"hello, this is not an image\n".to_vec(), DecodeLimits::default(), "decode_error"),
            ("truncated png", png[..png.len() / 2].to_vec(), DecodeLimits::default(), "decode_error"),
            ("corrupt jpeg", corrupt_jpeg, DecodeLimits::default(), "decode_error"),
            ("too many pixels", png.clone(), small, "too_large"),
            ("too many bytes", png.clone(), DecodeLimits { max_bytes: 10, ..DecodeLimits::default() }, "too_large"),
            ("too wide", png.clone(), DecodeLimits { max_dimension: 8, ..DecodeLimits::default() }, "too_large"),
        ];
        for (name, bytes, limits, status) in cases {
            let err = decode(&bytes, &limits).expect_err(name);
            assert_eq!(err.status().as_str(), status, "{name}: {err}");
        }
    }

    #[test]
    fn preprocesses_to_the_crop() {
        let png = encode(&sample(40, 30), image::ImageFormat::Png);
        let cfg = PreprocessorConfig::clip_default(8);
        let v = decode_and_preprocess(&png, &DecodeLimits::default(), &cfg).unwrap();
        assert_eq!(v.len(), 3 * 8 * 8);
    }
}
