//! Fetching one object: a timeout per attempt, retries with exponential backoff on transient
//! errors, and a deadline for the whole fetch, after which the row is a `fetch_error` (a store
//! that stays down ends the job instead of hanging it).
//!
//! Concurrency is bounded by the caller (`sql/loader.rs` runs at most
//! [`FetchOptions::concurrency`] fetches at once). The cloud and HTTP stores retry inside each
//! attempt too (object_store's own client retries); the deadline bounds both.

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
    /// Limit of one object's fetch, attempts and waits between them included.
    pub deadline: Duration,
}

impl Default for FetchOptions {
    /// 16 in flight, 10 retries, 60 s per attempt, 300 s per object.
    fn default() -> Self {
        Self { concurrency: 16, retries: 10, timeout: Duration::from_secs(60), deadline: Duration::from_secs(300) }
    }
}

/// The wait before retry `attempt` (1, 2, ...): 100 ms doubling, at most 10 s.
fn backoff(attempt: usize) -> Duration {
    Duration::from_millis(100u64 << attempt.saturating_sub(1).min(7)).min(Duration::from_secs(10))
}

/// Fetches `path` from `store`; `url` names it in errors.
pub async fn fetch(store: &Arc<dyn ObjectStore>, path: &Path, url: &str, options: &FetchOptions) -> Result<Bytes> {
    let started = tokio::time::Instant::now();
    let deadline = started + options.deadline;
    let mut attempt = 0;
    let mut last: Option<Error> = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            let last = last.map_or_else(String::new, |e| format!("; last: {e}"));
            return Err(Error::FetchDeadline { location: url.to_string(), seconds: options.deadline.as_secs_f64(), attempts: attempt, last });
        }
        let limit = options.timeout.min(left);
        let result = tokio::time::timeout(limit, async { store.get(path).await?.bytes().await }).await;
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
            Err(_) => Error::FetchTimeout { location: url.to_string(), seconds: limit.as_secs_f64() },
        };
        attempt += 1;
        if attempt > options.retries {
            return Err(err);
        }
        tracing::debug!(%url, attempt, "retrying fetch: {err}");
        last = Some(err);
        let wait = backoff(attempt).min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        tokio::time::sleep(wait).await;
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

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        let waits: Vec<u64> = (1..=10).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]);
    }
}
