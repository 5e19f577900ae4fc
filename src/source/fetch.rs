//! Fetching one object with a timeout per attempt and retries on transient errors.
//!
//! Concurrency is bounded by the caller (`sql/stream.rs` runs at most
//! [`FetchOptions::concurrency`] fetches at once with `buffered`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};

/// How objects are fetched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FetchOptions {
    /// Fetches in flight at once per stream.
    pub concurrency: usize,
    /// Attempts after the first for errors other than not-found / permission.
    pub retries: usize,
    /// Limit of one attempt.
    pub timeout: Duration,
}

impl Default for FetchOptions {
    /// 16 in flight, 2 retries, 60 s per attempt.
    fn default() -> Self {
        Self { concurrency: 16, retries: 2, timeout: Duration::from_secs(60) }
    }
}

/// Fetches `path` from `store`; `url` names it in errors.
pub async fn fetch(store: &Arc<dyn ObjectStore>, path: &Path, url: &str, options: &FetchOptions) -> Result<Bytes> {
    let mut attempt = 0;
    loop {
        let result = tokio::time::timeout(options.timeout, async { store.get(path).await?.bytes().await }).await;
        let err = match result {
            Ok(Ok(bytes)) => return Ok(bytes),
            Ok(Err(source)) => {
                let permanent = matches!(
                    source,
                    object_store::Error::NotFound { .. } | object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
                );
                let err = Error::Fetch { location: url.to_string(), source };
                if permanent {
                    return Err(err);
                }
                err
            }
            Err(_) => Error::FetchTimeout { location: url.to_string(), seconds: options.timeout.as_secs_f64() },
        };
        if attempt >= options.retries {
            return Err(err);
        }
        attempt += 1;
        tracing::debug!(%url, attempt, "retrying fetch: {err}");
        tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn fetches_and_reports_missing_objects() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        store.put(&Path::from("a"), vec![1u8, 2].into()).await.unwrap();
        let opts = FetchOptions::default();
        assert_eq!(fetch(&store, &Path::from("a"), "memory:///a", &opts).await.unwrap().as_ref(), &[1, 2]);
        let err = fetch(&store, &Path::from("b"), "memory:///b", &opts).await.unwrap_err();
        assert_eq!(err.status(), crate::RowStatus::FetchError);
        assert!(err.to_string().contains("memory:///b"), "{err}");
    }
}
