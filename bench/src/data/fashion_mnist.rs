//! Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017; Zalando, MIT licence): 70,000 28x28 grayscale
//! photos of clothing in ten classes, as installed by the Debian package `dataset-fashion-mnist`.

use std::fmt;
use std::path::Path;

use super::idx::{read_idx_gz, IdxArray};
use super::image28::{Image28, PIXELS, SIDE};
use super::paths::{self, FASHION_MNIST_DIR_ENV};
use crate::error::{Error, Result};

/// Class names used in prompts and in the lake's `label` column, indexed by label id: the
/// classes of the embedded default model, which was trained on this dataset (the names and why
/// they differ from [`OFFICIAL_CLASS_NAMES`] are documented there).
pub const CLASS_NAMES: [&str; 10] = cliptta::source::DEFAULT_MODEL_CLASSES;

/// The names in the dataset's README, indexed by label id.
pub const OFFICIAL_CLASS_NAMES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Which half of the dataset to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// 60,000 images (`train-*`).
    Train,
    /// 10,000 images (`t10k-*`).
    Test,
}

impl Split {
    /// The file-name prefix the dataset uses for this split.
    pub fn file_prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }

    /// Number of images the official split has.
    pub fn expected_len(self) -> usize {
        match self {
            Split::Train => 60_000,
            Split::Test => 10_000,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// One split of Fashion-MNIST in memory (47 MB for the training split).
#[derive(Debug, Clone)]
pub struct FashionMnist {
    /// Which split this is.
    pub split: Split,
    /// The images, in file order.
    pub images: Vec<Image28>,
    /// Label ids 0..=9, indexes into [`CLASS_NAMES`]; same order and length as `images`.
    pub labels: Vec<u8>,
}

impl FashionMnist {
    /// Loads `dir/{train,t10k}-images-idx3-ubyte.gz` and the matching `-labels-idx1-ubyte.gz`.
    ///
    /// Checks shapes, that images and labels agree in count and that labels are 0..=9; any
    /// failure names the file. The counts are not required to be the official ones, so small
    /// test files work.
    ///
    /// ```no_run
    /// use cliptta_bench::data::{FashionMnist, Split, CLASS_NAMES};
    /// let test = FashionMnist::load(&cliptta_bench::data::fashion_mnist_dir(), Split::Test)?;
    /// println!("{} images, first is a {}", test.len(), CLASS_NAMES[test.labels[0] as usize]);
    /// # Ok::<(), cliptta_bench::Error>(())
    /// ```
    pub fn load(dir: &Path, split: Split) -> Result<Self> {
        let images_path = dir.join(format!("{}-images-idx3-ubyte.gz", split.file_prefix()));
        let labels_path = dir.join(format!("{}-labels-idx1-ubyte.gz", split.file_prefix()));
        paths::require(&images_path, FASHION_MNIST_DIR_ENV)?;
        paths::require(&labels_path, FASHION_MNIST_DIR_ENV)?;

        let IdxArray { dims, data } = read_idx_gz(&images_path)?;
        if dims.len() != 3 || dims[1] != SIDE || dims[2] != SIDE {
            return Err(Error::dataset(&images_path, format!("image dimensions are {dims:?}, expected [n, 28, 28]")));
        }
        let images: Vec<Image28> = data
            .chunks_exact(PIXELS)
            .map(|c| c.try_into().map_err(|_| Error::dataset(&images_path, "truncated image")))
            .collect::<Result<_>>()?;

        let labels_idx = read_idx_gz(&labels_path)?;
        if labels_idx.dims != [images.len()] {
            return Err(Error::dataset(
                &labels_path,
                format!("label dimensions are {:?}, expected [{}] to match {}", labels_idx.dims, images.len(), images_path.display()),
            ));
        }
        if let Some((i, bad)) = labels_idx.data.iter().enumerate().find(|(_, &l)| l as usize >= CLASS_NAMES.len()) {
            return Err(Error::dataset(&labels_path, format!("label {bad} at index {i} is outside 0..=9")));
        }
        Ok(FashionMnist { split, images, labels: labels_idx.data })
    }

    /// [`FashionMnist::load`] from [`fashion_mnist_dir`](super::fashion_mnist_dir).
    pub fn load_default(split: Split) -> Result<Self> {
        Self::load(&paths::fashion_mnist_dir(), split)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True when the split holds no images.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::idx::tests::write_idx_gz;
    use super::*;

    fn write_split(dir: &Path, images: &[u8], n: u32, labels: &[u8]) {
        write_idx_gz(&dir.join("t10k-images-idx3-ubyte.gz"), &[n, 28, 28], images);
        write_idx_gz(&dir.join("t10k-labels-idx1-ubyte.gz"), &[labels.len() as u32], labels);
    }

    #[test]
    fn loads_a_small_written_split() {
        let dir = tempfile::tempdir().unwrap();
        let mut images = vec![0u8; 2 * PIXELS];
        images[PIXELS + 5] = 99;
        write_split(dir.path(), &images, 2, &[9, 3]);
        let ds = FashionMnist::load(dir.path(), Split::Test).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.labels, vec![9, 3]);
        assert_eq!(ds.images[1][5], 99);
    }

    #[test]
    fn rejects_inconsistent_files_naming_them() {
        let cases: &[(&[u8], u32, &[u8], &str)] = &[
            (&[0u8; PIXELS], 1, &[1, 2], "labels-idx1-ubyte.gz: label dimensions are [2], expected [1]"),
            (&[0u8; PIXELS], 1, &[10], "label 10 at index 0 is outside 0..=9"),
        ];
        for (images, n, labels, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            write_split(dir.path(), images, *n, labels);
            let err = FashionMnist::load(dir.path(), Split::Test).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        write_idx_gz(&dir.path().join("t10k-images-idx3-ubyte.gz"), &[1, 32, 32], &[0u8; 1024]);
        write_idx_gz(&dir.path().join("t10k-labels-idx1-ubyte.gz"), &[1], &[0]);
        let err = FashionMnist::load(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("images-idx3-ubyte.gz: image dimensions are [1, 32, 32]"), "{err}");
    }

    #[test]
    fn missing_split_says_how_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let err = FashionMnist::load(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte.gz") && err.contains("scripts/install-datasets.sh"), "{err}");
    }

    /// Needs `scripts/install-datasets.sh`; fails with that advice otherwise.
    #[test]
    fn real_dataset_has_the_official_splits() {
        let test = FashionMnist::load_default(Split::Test).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(test.len(), 10_000);
        // First test image is an ankle boot (the dataset README's sample, label 9).
        assert_eq!(test.labels[0], 9);
        let mut counts = [0usize; 10];
        test.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, [1000; 10]);
        let train = FashionMnist::load_default(Split::Train).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(train.len(), Split::Train.expected_len());
        assert_eq!(train.labels[..3], [9, 0, 0]);
        assert!(train.labels.iter().all(|&l| l < 10));
    }
}
