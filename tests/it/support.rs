//! Shared helpers for the integration tests.

use std::path::PathBuf;

use candle_core::Tensor;

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The reference outputs written by `tests/fixtures/make_tiny_clip.py`.
pub fn tiny_reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("tiny-clip-reference.json")).expect("reference fixture");
    serde_json::from_str(&text).expect("reference JSON")
}

/// A JSON array of numbers as f64.
pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

/// Max absolute difference divided by the max absolute reference value.
pub fn rel_max_err(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let scale = expected.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
    actual.iter().zip(expected).fold(0f64, |m, (a, e)| m.max((a - e).abs())) / scale
}

/// A tensor flattened to f64.
pub fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all().and_then(|t| t.to_dtype(candle_core::DType::F64)).and_then(|t| t.to_vec1()).expect("tensor")
}
