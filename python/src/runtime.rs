//! The one Tokio runtime of the process's cliptta work: scans are planned and driven on its
//! workers, never on a Python thread (the scan's blocking model loads need a multi-threaded
//! runtime, and a Python thread waiting for a batch holds no runtime context).

use std::sync::OnceLock;

use tokio::runtime::Runtime;

/// The runtime, built on first use.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("cliptta").build().expect("a Tokio runtime")
    })
}
