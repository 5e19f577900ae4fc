//! Real image datasets and the distribution shifts the benchmark and the demo lake apply to them.
//!
//! - [`FashionMnist`]: the in-distribution data (ten clothing classes, [`CLASS_NAMES`]).
//! - [`Mnist5k`]: handwritten digits, used as out-of-distribution images.
//! - [`Corruption`]: the 15 distribution shifts of the -C benchmarks, five severities each.
//! - [`write_lake`]: a folder of PNG files mixing both, corrupted, with a `labels.csv`.
//!
//! Both are installed by `scripts/install-datasets.sh`; [`fashion_mnist_dir`] and
//! [`mnist_5k_path`] find them ([`FASHION_MNIST_DIR_ENV`] and [`DATA_DIR_ENV`] override).

mod corruption;
mod fashion_mnist;
mod idx;
mod image28;
mod lake;
mod mnist;
mod paths;

pub use corruption::{Corruption, SEVERITIES};
pub use fashion_mnist::{FashionMnist, Split, CLASS_NAMES, OFFICIAL_CLASS_NAMES};
pub use idx::{read_idx_gz, IdxArray};
pub use image28::{from_gray_image, to_gray_image, Image28, PIXELS, SIDE};
pub use lake::{encode_png, plan_lake, write_lake, LakeConfig, LakeRow, LakeSource, LAKE_CSV_HEADER};
pub use mnist::{Mnist5k, MNIST_5K_LEN};
pub use paths::{
    data_dir, fashion_mnist_dir, mnist_5k_path, DATA_DIR_ENV, DEFAULT_FASHION_MNIST_DIR, FASHION_MNIST_DIR_ENV,
    MNIST_5K_FILE,
};
