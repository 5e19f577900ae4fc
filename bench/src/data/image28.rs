//! The 28x28 grayscale image both datasets use, as a flat row-major byte array.
//!
//! A plain array (not `GrayImage`) so a 60,000-image split is one allocation-free `Vec` and
//! corruptions can index pixels directly; [`to_gray_image`] converts for encoding or CLIP
//! preprocessing.

use image::GrayImage;

/// Width and height of every image.
pub const SIDE: usize = 28;

/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;

/// One 28x28 grayscale image, row-major, 0 = black. Both MNIST and Fashion-MNIST draw a light
/// object on a black background.
pub type Image28 = [u8; PIXELS];

/// Converts to an `image` crate buffer (for PNG encoding or `DynamicImage::ImageLuma8`).
pub fn to_gray_image(pixels: &Image28) -> GrayImage {
    // The buffer length always equals width * height, so `from_raw` cannot fail; the fallback
    // keeps this function total without an `unwrap`.
    GrayImage::from_raw(SIDE as u32, SIDE as u32, pixels.to_vec()).unwrap_or_else(|| GrayImage::new(SIDE as u32, SIDE as u32))
}

/// Converts back from an `image` crate buffer; `None` unless it is exactly 28x28.
pub fn from_gray_image(img: &GrayImage) -> Option<Image28> {
    if img.dimensions() != (SIDE as u32, SIDE as u32) {
        return None;
    }
    img.as_raw().as_slice().try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_gray_image() {
        let mut px = [0u8; PIXELS];
        px[SIDE + 2] = 200; // row 1, column 2
        let img = to_gray_image(&px);
        assert_eq!(img.get_pixel(2, 1)[0], 200);
        assert_eq!(from_gray_image(&img), Some(px));
        assert_eq!(from_gray_image(&GrayImage::new(27, 28)), None);
    }
}
