//! [`ArrowStream`]: the record batches of a running scan, as a Python object implementing the
//! Arrow PyCapsule interface (`__arrow_c_stream__`). The scan runs on the cliptta runtime's
//! workers, one batch ahead of the reader; a Python thread waiting for a batch has released
//! the GIL, and a pending Ctrl-C ends the stream at the next batch.

use std::sync::Mutex;

use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ffi_stream::FFI_ArrowArrayStream;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use tokio::sync::mpsc;

use crate::runtime::runtime;

/// Record batches still to come from a scan: pass it to `pyarrow.RecordBatchReader.from_stream`,
/// `pyarrow.table`, `polars.from_arrow` or `duckdb.from_arrow` (each reads it once).
#[pyclass(module = "cliptta._cliptta", name = "ArrowStream")]
pub struct ArrowStream {
    schema: SchemaRef,
    reader: Mutex<Option<BatchReader>>,
}

impl ArrowStream {
    /// Drives `stream` on the runtime; batches wait in a queue of one.
    pub fn spawn(stream: SendableRecordBatchStream) -> Self {
        let schema = stream.schema();
        let (tx, rx) = mpsc::channel(1);
        runtime().spawn(async move {
            let mut stream = stream;
            while let Some(batch) = stream.next().await {
                // The reader is gone (dropped or interrupted): stop adapting.
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
        });
        Self { schema: schema.clone(), reader: Mutex::new(Some(BatchReader { schema, rx })) }
    }
}

#[pymethods]
impl ArrowStream {
    /// The Arrow PyCapsule stream protocol. The stream has one schema, so `requested_schema`
    /// is ignored, as the protocol allows; a second call raises, because the batches are read
    /// once.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(&self, py: Python<'py>, requested_schema: Option<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let reader = self
            .reader
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the stream's lock is poisoned"))?
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("this cliptta stream was already read; call cliptta again for a new one"))?;
        PyCapsule::new_with_value(py, FFI_ArrowArrayStream::new(Box::new(reader)), c"arrow_array_stream")
    }

    /// The output columns, as a pyarrow-readable schema capsule (`__arrow_c_schema__`).
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let schema = arrow::ffi::FFI_ArrowSchema::try_from(self.schema.as_ref()).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        PyCapsule::new_with_value(py, schema, c"arrow_schema")
    }
}

/// The consumer side of the queue, read through the C stream interface.
struct BatchReader {
    schema: SchemaRef,
    rx: mpsc::Receiver<datafusion::error::Result<RecordBatch>>,
}

impl Iterator for BatchReader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Called by the consumer, with or without the GIL: take it only to check for Ctrl-C,
        // and wait for the batch without it.
        let interrupted = Python::attach(|py| py.check_signals().err().map(|e| e.to_string()));
        if let Some(text) = interrupted {
            self.rx.close();
            return Some(Err(ArrowError::ExternalError(format!("interrupted: {text}").into())));
        }
        let next = Python::attach(|py| py.detach(|| self.rx.blocking_recv()));
        next.map(|r| r.map_err(|e| ArrowError::ExternalError(Box::new(e))))
    }
}

impl RecordBatchReader for BatchReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
