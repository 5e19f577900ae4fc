//! `cliptta._cliptta`: the extension module under the `cliptta` Python package. It runs the
//! same Rust core as the `cliptta` binary and the `cliptta(...)` table function, and hands
//! results to Python as Arrow C streams, which pyarrow, Polars and DuckDB read without copying.

mod errors;
mod label;
mod options;
mod runtime;
mod stream;

use pyo3::prelude::*;

/// Configures glibc's malloc for adaptation as the `cliptta` command does at start
/// (`cliptta::allocator`): one arena, and freed activation blocks kept for the next batch
/// instead of returned to the kernel. It is process-wide, so the package never does it on
/// import; returns whether it applied (only glibc has these settings).
#[pyfunction]
fn retain_freed_memory() -> bool {
    cliptta::allocator::retain_freed_memory()
}

#[pymodule]
fn _cliptta(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(label::label, m)?)?;
    m.add_function(wrap_pyfunction!(retain_freed_memory, m)?)?;
    m.add_class::<stream::ArrowStream>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
