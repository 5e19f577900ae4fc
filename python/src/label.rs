//! `cliptta.label`: every image under a location, labelled as `cliptta label` and the
//! `cliptta(...)` table function label it (the same provider, options and order).

use std::sync::Arc;

use cliptta::source::ImageLocation;
use cliptta::sql::{ClipTtaProvider, ProviderSource};
use datafusion::prelude::SessionContext;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{from_datafusion, to_py};
use crate::runtime::runtime;
use crate::stream::ArrowStream;

/// Labels the images at `location` (a path, `file://`, `s3://`, `gs://`, `az://`, `http(s)://`
/// or `memory://` URL, with an optional glob) with `classes`, adapting with `method`; the
/// keyword arguments are the SQL options. Returns the rows as an Arrow stream.
#[pyfunction]
#[pyo3(signature = (location, classes, method = "cliptta", **options))]
pub fn label(py: Python<'_>, location: &str, classes: &Bound<'_, PyAny>, method: &str, options: Option<&Bound<'_, PyDict>>) -> PyResult<ArrowStream> {
    let options = crate::options::parse(classes, method, options)?;
    let location = ImageLocation::parse(location).map_err(to_py)?;
    location.check_exists().map_err(to_py)?;
    let provider = ClipTtaProvider::try_new(ProviderSource::Lake(location), options).map_err(from_datafusion)?;
    let ctx = SessionContext::new();
    cliptta::sql::register(&ctx);
    // Planning lists the lake and may fetch a model's config: on the runtime's workers, with
    // the GIL released.
    let stream = py
        .detach(|| {
            runtime().block_on(runtime().spawn(async move {
                let frame = ctx.read_table(Arc::new(provider))?;
                frame.execute_stream().await
            }))
        })
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("the scan's planning task failed: {e}")))?
        .map_err(from_datafusion)?;
    Ok(ArrowStream::spawn(stream))
}
