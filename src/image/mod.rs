//! Raw image bytes to model input: decoding with explicit limits, then CLIP preprocessing.

mod preprocess;

pub use preprocess::{preprocess, to_tensor};
