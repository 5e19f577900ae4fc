//! Which partition of a lake scan an object belongs to: a stable hash of its path relative to
//! the location's prefix, modulo the partition count.
//!
//! Why a hash and not the object's rank in the listing: every partition lists the location on
//! its own (on a cluster, in different processes and at different times, and again when a task is
//! retried). With ranks, one object added or removed between two listings shifts every later
//! object to another partition, so a retried task could repeat or skip rows. With a hash of the
//! object's own path, each object's partition depends on nothing else, so an unchanged lake gives
//! the same partitions on every run and a changing one never duplicates or loses an object.
//! SHA-256 (not `std`'s hasher) keeps the assignment the same across Rust versions and machines;
//! the path is taken relative to the prefix so a copy of a lake at another root (another bucket,
//! another directory) is split the same way.

use object_store::path::Path;
use sha2::{Digest, Sha256};

/// The partition (in `0..partitions`) of the object at `path` under `prefix`. `partitions` of 0
/// is treated as 1.
pub fn partition_of(prefix: &Path, path: &Path, partitions: usize) -> usize {
    let partitions = partitions.max(1);
    if partitions == 1 {
        return 0;
    }
    let full = path.as_ref();
    let relative = full.strip_prefix(prefix.as_ref()).map(|r| r.trim_start_matches('/')).unwrap_or(full);
    let digest = Sha256::digest(relative.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    // Lossless on 64-bit targets; on 32-bit ones the modulo below keeps it in range anyway.
    (u64::from_be_bytes(head) % partitions as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_relative_to_the_prefix() {
        // Pinned values: a change here changes which task sees which image on every deployment.
        let cases = [("lake", "lake/a.png", 2, 0), ("lake", "lake/c.png", 2, 1), ("lake", "lake/b.png", 7, 3), ("", "b.png", 7, 3)];
        for (prefix, path, n, want) in cases {
            assert_eq!(partition_of(&Path::from(prefix), &Path::from(path), n), want, "{path} of {n}");
        }
        // The same relative path under another root lands in the same partition.
        let a = partition_of(&Path::from("x/lake"), &Path::from("x/lake/sub/c.png"), 5);
        let b = partition_of(&Path::from("other"), &Path::from("other/sub/c.png"), 5);
        assert_eq!(a, b);
        assert_eq!(partition_of(&Path::from("p"), &Path::from("p/a.png"), 0), 0);
    }

    #[test]
    fn spreads_objects_over_partitions() {
        let prefix = Path::from("lake");
        let mut counts = [0usize; 4];
        for i in 0..1000 {
            counts[partition_of(&prefix, &Path::from(format!("lake/{i:05}.png")), 4)] += 1;
        }
        // 250 expected each; a hash that ignored part of the path would pile them up.
        assert!(counts.iter().all(|&c| (200..300).contains(&c)), "{counts:?}");
    }
}
