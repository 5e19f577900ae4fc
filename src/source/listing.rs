//! Listing the objects of a location, filtered by its glob, in a reproducible order.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::location::ImageLocation;
use crate::error::Result;

/// The order in which listed objects are fed to the adapter. Online adaptation depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingOrder {
    /// Sorted by path, then shuffled with this seed (i.i.d.-like and reproducible).
    Shuffle(u64),
    /// Sorted by path.
    Listing,
}

/// Lists the objects under `location` that match its glob, ordered by `order`. A location that
/// names one object (no glob, nothing under it as a prefix) lists that object.
pub async fn list_objects(store: &Arc<dyn ObjectStore>, location: &ImageLocation, order: ListingOrder) -> Result<Vec<ObjectMeta>> {
    let prefix = location.prefix();
    let prefix = if prefix.as_ref().is_empty() { None } else { Some(prefix) };
    let mut objects: Vec<ObjectMeta> = store.list(prefix).try_filter(|m| futures::future::ready(location.matches(&m.location))).try_collect().await?;
    if objects.is_empty() && !location.has_glob() {
        if let Some(p) = prefix {
            match store.head(p).await {
                Ok(meta) => objects.push(meta),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    if let ListingOrder::Shuffle(seed) = order {
        objects.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    #[tokio::test]
    async fn lists_filters_and_orders() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for name in ["imgs/a.png", "imgs/b.jpg", "imgs/sub/c.png", "other/d.png"] {
            store.put(&Path::from(name), vec![1u8].into()).await.unwrap();
        }
        let names = |v: Vec<ObjectMeta>| v.into_iter().map(|m| m.location.to_string()).collect::<Vec<_>>();
        let all = ImageLocation::parse("memory:///imgs").unwrap();
        assert_eq!(names(list_objects(&store, &all, ListingOrder::Listing).await.unwrap()), ["imgs/a.png", "imgs/b.jpg", "imgs/sub/c.png"]);
        let png = ImageLocation::parse("memory:///imgs/**/*.png").unwrap();
        assert_eq!(names(list_objects(&store, &png, ListingOrder::Listing).await.unwrap()), ["imgs/a.png", "imgs/sub/c.png"]);
        let one = ImageLocation::parse("memory:///imgs/b.jpg").unwrap();
        assert_eq!(names(list_objects(&store, &one, ListingOrder::Listing).await.unwrap()), ["imgs/b.jpg"]);
        let a = names(list_objects(&store, &all, ListingOrder::Shuffle(7)).await.unwrap());
        let b = names(list_objects(&store, &all, ListingOrder::Shuffle(7)).await.unwrap());
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
    }
}
