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

/// What a listing found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The listed objects, in the listing order.
    pub objects: Vec<ObjectMeta>,
    /// Objects under the prefix that the glob or the extensions left out, sorted by path.
    pub skipped: Vec<ObjectMeta>,
}

/// Lists the objects under `location` that match its glob (or, without one, its extensions),
/// ordered by `order`. A location that names one object (no glob, nothing under it as a
/// prefix) lists that object, whatever its extension.
pub async fn list_objects(store: &Arc<dyn ObjectStore>, location: &ImageLocation, order: ListingOrder) -> Result<Listing> {
    let prefix = location.prefix();
    let prefix = if prefix.as_ref().is_empty() { None } else { Some(prefix) };
    let all: Vec<ObjectMeta> = store.list(prefix).try_collect().await?;
    let (mut objects, mut skipped): (Vec<ObjectMeta>, Vec<ObjectMeta>) = all.into_iter().partition(|m| location.matches(&m.location));
    if objects.is_empty() && skipped.is_empty() && !location.has_glob() {
        if let Some(p) = prefix {
            match store.head(p).await {
                Ok(meta) => objects.push(meta),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    skipped.sort_by(|a, b| a.location.cmp(&b.location));
    if let ListingOrder::Shuffle(seed) = order {
        objects.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    }
    Ok(Listing { objects, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    #[tokio::test]
    async fn lists_filters_and_orders() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for name in ["imgs/a.png", "imgs/b.jpg", "imgs/sub/c.png", "imgs/labels.csv", "other/d.png"] {
            store.put(&Path::from(name), vec![1u8].into()).await.unwrap();
        }
        let names = |v: &[ObjectMeta]| v.iter().map(|m| m.location.to_string()).collect::<Vec<_>>();
        let list = |location: &'static str, order| {
            let store = store.clone();
            async move {
                let l = list_objects(&store, &ImageLocation::parse(location).unwrap(), order).await.unwrap();
                (names(&l.objects), names(&l.skipped))
            }
        };
        assert_eq!(list("memory:///imgs", ListingOrder::Listing).await, (vec!["imgs/a.png", "imgs/b.jpg", "imgs/sub/c.png"].into_iter().map(String::from).collect(), vec!["imgs/labels.csv".to_string()]));
        let (png, skipped) = list("memory:///imgs/**/*.png", ListingOrder::Listing).await;
        assert_eq!((png, skipped), (vec!["imgs/a.png".to_string(), "imgs/sub/c.png".into()], vec!["imgs/b.jpg".to_string(), "imgs/labels.csv".into()]));
        assert_eq!(list("memory:///imgs/b.jpg", ListingOrder::Listing).await.0, ["imgs/b.jpg"]);
        // A location naming one object lists it whatever its extension.
        assert_eq!(list("memory:///imgs/labels.csv", ListingOrder::Listing).await.0, ["imgs/labels.csv"]);
        let a = list("memory:///imgs", ListingOrder::Shuffle(7)).await.0;
        let b = list("memory:///imgs", ListingOrder::Shuffle(7)).await.0;
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
    }
}
