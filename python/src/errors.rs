//! cliptta's errors as the Python exceptions a caller catches: a bad option or value is a
//! `ValueError`, a location that does not exist a `FileNotFoundError`, a failed read an
//! `OSError`, anything else a `RuntimeError`; the message is the Rust error's, with its causes.

use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

/// The Python exception for a cliptta error.
pub fn to_py(e: cliptta::Error) -> PyErr {
    use cliptta::Error as E;
    let message = chain(&e);
    match e {
        E::InvalidInput(_) | E::Plan(_) => PyValueError::new_err(message),
        E::Location { .. } => PyFileNotFoundError::new_err(message),
        E::Io { .. } | E::ObjectStore(_) | E::Fetch { .. } | E::FetchTimeout { .. } | E::FetchDeadline { .. } => PyOSError::new_err(message),
        _ => PyRuntimeError::new_err(message),
    }
}

/// A DataFusion error (planning or a failed batch) as a `RuntimeError`, or as the cliptta
/// error it wraps.
pub fn from_datafusion(e: datafusion::error::DataFusionError) -> PyErr {
    match e {
        datafusion::error::DataFusionError::External(inner) => match inner.downcast::<cliptta::Error>() {
            Ok(e) => to_py(*e),
            Err(other) => PyRuntimeError::new_err(chain(other.as_ref())),
        },
        other => PyRuntimeError::new_err(chain(&other)),
    }
}

/// `error: cause: cause ...`, each source once.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
