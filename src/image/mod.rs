//! Raw image bytes to model input: decoding with explicit limits, then CLIP preprocessing.

mod decode;
mod pixels;
mod preprocess;

pub use decode::{decode, decode_and_preprocess, DecodeLimits};
pub use pixels::{clip_pixels, Pixels};
pub use preprocess::{preprocess, to_tensor};
