//! `cliptta._cliptta`: the extension module under the `cliptta` Python package. It runs the
//! same Rust core as the `cliptta` binary and the `cliptta(...)` table function, and hands
//! results to Python as Arrow C streams, which pyarrow, Polars and DuckDB read without copying.

mod errors;
mod label;
mod options;
mod runtime;
mod stream;

use pyo3::prelude::*;

#[pymodule]
fn _cliptta(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(label::label, m)?)?;
    m.add_class::<stream::ArrowStream>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
