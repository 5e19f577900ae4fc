//! Crate errors inside DataFusion: wrapped as `DataFusionError::External`, so the typed
//! source (with its path or URL) survives to the caller.

use datafusion::error::DataFusionError;

impl From<crate::Error> for DataFusionError {
    fn from(e: crate::Error) -> Self {
        DataFusionError::External(Box::new(e))
    }
}
