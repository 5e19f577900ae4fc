//! Real datasets (installed by `scripts/install-datasets.sh`), corruptions on real images, and the
//! committed lakes.

use std::path::PathBuf;

use cliptta_bench::data::{write_lake, Corruption, FashionMnist, Image28, LakeConfig, Mnist5k, Split, PIXELS, SEVERITIES};

fn fashion_test() -> FashionMnist {
    FashionMnist::load_default(Split::Test).unwrap_or_else(|e| panic!("{e}"))
}

fn mnist() -> Mnist5k {
    Mnist5k::load_default().unwrap_or_else(|e| panic!("{e}"))
}

fn mad(a: &Image28, b: &Image28) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum::<f64>() / PIXELS as f64
}

/// On real Fashion-MNIST images, the mean absolute difference to the clean image grows with
/// severity for the types where CIFAR-10-C's parameters make it grow (the unit test in
/// `src/data/corruption/kind.rs` checks the same on synthetic images). Motion blur's severities
/// 3 and 4 coincide; glass blur, frost and elastic transform are not monotone in this measure.
#[test]
fn corruption_strength_grows_with_severity_on_real_images() {
    let ds = fashion_test();
    let images = &ds.images[..30];
    let strict = [
        Corruption::GaussianNoise,
        Corruption::ShotNoise,
        Corruption::ImpulseNoise,
        Corruption::DefocusBlur,
        Corruption::ZoomBlur,
        Corruption::Snow,
        Corruption::Fog,
        Corruption::Brightness,
        Corruption::Contrast,
        Corruption::Pixelate,
        Corruption::JpegCompression,
    ];
    for c in strict.into_iter().chain([Corruption::MotionBlur]) {
        let curve: Vec<f64> = SEVERITIES
            .map(|s| images.iter().enumerate().map(|(i, img)| mad(img, &c.apply(img, s, i as u64).unwrap())).sum::<f64>() / 30.0)
            .collect();
        let ok = if c == Corruption::MotionBlur {
            curve.windows(2).all(|w| w[1] >= w[0] - 1e-9) && curve[4] > curve[0]
        } else {
            curve.windows(2).all(|w| w[1] > w[0])
        };
        assert!(ok, "{c}: {curve:?}");
    }
}

/// A small lake from the real datasets: every PNG decodes to 28x28 and every OOD row is a digit.
#[test]
fn small_real_lake() {
    let (fashion, digits) = (fashion_test(), mnist());
    let dir = tempfile::tempdir().unwrap();
    let config = LakeConfig { fashion_count: 30, mnist_count: 10, ..LakeConfig::default() };
    let rows = write_lake(dir.path(), &config, &fashion, &digits).unwrap();
    assert_eq!(rows.len(), 40);
    let csv = std::fs::read_to_string(dir.path().join("labels.csv")).unwrap();
    assert_eq!(csv.lines().count(), 41);
    for row in &rows {
        let img = image::open(dir.path().join(&row.path)).unwrap();
        assert_eq!((img.width(), img.height()), (28, 28));
        assert_eq!(row.is_ood, row.label.starts_with("digit "));
    }
    assert_eq!(rows.iter().filter(|r| r.is_ood).count(), 10);
}

/// `data/<name>/` is exactly what `write_lake` makes of `config` (so its README and labels are
/// true to the images), with no other file in `images/`.
fn committed_matches(name: &str, config: &LakeConfig, count: usize) {
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data").join(name);
    let dir = tempfile::tempdir().unwrap();
    let rows = write_lake(dir.path(), config, &fashion_test(), &mnist()).unwrap();
    assert_eq!(rows.len(), count);
    let read = |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(read(dir.path().join("labels.csv")), read(committed.join("labels.csv")), "labels.csv differs");
    for row in &rows {
        assert_eq!(read(dir.path().join(&row.path)), read(committed.join(&row.path)), "{} differs", row.path);
    }
    assert_eq!(std::fs::read_dir(committed.join("images")).unwrap().count(), count, "stale files in data/{name}/images");
}

/// The committed mixed lake `data/lake/` is what `cargo run -p cliptta-bench --example make_lake`
/// writes with the default options.
#[test]
fn committed_lake_matches_the_generator() {
    committed_matches("lake", &LakeConfig::default(), 1000);
}

/// The committed demo lake `data/demo/` is what `make_lake --shift-demo` writes.
#[test]
fn committed_demo_lake_matches_the_generator() {
    let config = LakeConfig::shift_demo();
    assert_eq!((config.corruptions.as_slice(), config.severities.as_slice(), config.clean_fraction), ([Corruption::Brightness].as_slice(), [5u8].as_slice(), 0.0));
    committed_matches("demo", &config, 1250);
}
