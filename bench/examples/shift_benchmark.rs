//! The distribution-shift benchmark: Fashion-MNIST test images under the 15 corruptions at one
//! severity, zero-shot vs TENT vs CLIPTTA (closed set), and the open set with MNIST digits
//! (under the same corruption) mixed in as out-of-distribution images.
//!
//! ```text
//! scripts/install-datasets.sh
//! cargo run --example shift_benchmark -- --images 10000 --severity 5
//! ```
//! Each (corruption, method) is one stream: a fresh adapter (reset between streams, continual
//! within), images shuffled with a fixed seed, batches of `--batch`. Prints markdown tables;
//! results are recorded in BENCHMARKS.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use cliptta_bench::data::{Corruption, FashionMnist, Image28, Mnist5k, Split, CLASS_NAMES, SIDE};
use cliptta::image::{preprocess, to_tensor};
use cliptta::model::{ClipModel, LoadOptions};
use cliptta::tta::{Adapter, MethodConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;

#[derive(Parser)]
struct Args {
    /// Checkpoint directory.
    #[arg(long, default_value = "data/models/default")]
    model: PathBuf,
    /// Test images per corruption (first N after a seeded shuffle).
    #[arg(long, default_value_t = 10_000)]
    images: usize,
    /// Corruption severity (1-5).
    #[arg(long, default_value_t = 5)]
    severity: u8,
    /// Corruptions to run (comma-separated names; default all 15).
    #[arg(long, value_delimiter = ',')]
    corruptions: Vec<String>,
    /// Closed-set methods to compare (`--methods ''` for none).
    #[arg(long, value_delimiter = ',', default_value = "zero_shot,tent,cliptta,tda")]
    methods: Vec<String>,
    /// Open-set methods to compare with `--open-set`.
    #[arg(long, value_delimiter = ',', default_value = "zero_shot,cliptta,unient")]
    open_methods: Vec<String>,
    /// In-distribution images per batch.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Also run the open set (MNIST digits as OOD, same number per batch as --ood-batch).
    #[arg(long)]
    open_set: bool,
    /// OOD images per open-set batch.
    #[arg(long, default_value_t = 128)]
    ood_batch: usize,
    /// A method setting as KEY=VALUE (repeatable), applied to every method that has it.
    #[arg(long = "set", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// Seed for shuffling and corruption noise.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the model runs: cpu or cuda:N (the latter needs `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn parse_setting(text: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = text.split_once('=').ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// The method's official settings with the `--set` values it has.
fn method_config(name: &str, open_set: bool, settings: &[(String, String)]) -> Result<MethodConfig> {
    let mut m = MethodConfig::from_name(name, open_set)?;
    for (k, v) in settings {
        if m.has_setting(k) {
            m.set(k, v)?;
        }
    }
    Ok(m)
}

struct StreamResult {
    accuracy: f64,
    distinct: usize,
    ms_per_image: f64,
    auroc: Option<f64>,
    fpr95: Option<f64>,
    /// Batches after which the adaptation guard triggered (at its defaults, warn).
    guard_events: usize,
    /// Largest relative distance of the LayerNorms from the checkpoint after a batch.
    max_distance: f32,
    /// Model recoveries the method made itself (SAR).
    recoveries: u64,
}

fn tensor_of(images: &[Image28], model: &ClipModel) -> Result<candle_core::Tensor> {
    let pre = model.preprocessor();
    let batch: Vec<Vec<f32>> = images
        .iter()
        .map(|img| preprocess(&image::DynamicImage::ImageLuma8(cliptta_bench::data::to_gray_image(img)), pre))
        .collect::<cliptta::Result<_>>()?;
    Ok(to_tensor(&batch, pre.crop_size, model.device())?)
}

fn run_stream(
    model: &Arc<ClipModel>,
    method: MethodConfig,
    id: &[(Image28, u8)],
    ood: Option<&[Image28]>,
    batch: usize,
    ood_batch: usize,
) -> Result<StreamResult> {
    let classes: Vec<String> = CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    let mut adapter = Adapter::new(model.clone(), &classes, &["a photo of a {}".to_string()], method)?;
    let (mut correct, mut seen) = (0usize, 0usize);
    let mut predicted = std::collections::HashSet::new();
    let (mut scores, mut positives) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let mut total_images = 0usize;
    let (mut guard_events, mut max_distance) = (0usize, 0f32);
    for (b, chunk) in id.chunks(batch).enumerate() {
        let mut images: Vec<Image28> = chunk.iter().map(|(img, _)| *img).collect();
        if let Some(ood) = ood {
            let start = (b * ood_batch) % ood.len();
            images.extend((0..ood_batch).map(|i| ood[(start + i) % ood.len()]));
        }
        let out = adapter.adapt_and_predict(&tensor_of(&images, model)?)?;
        total_images += images.len();
        guard_events += usize::from(out.guard.is_some());
        max_distance = max_distance.max(out.diagnostics.as_ref().map_or(0.0, |d| d.distance));
        for (i, (_, label)) in chunk.iter().enumerate() {
            predicted.insert(out.labels[i]);
            correct += usize::from(out.labels[i] == *label as u32);
            seen += 1;
        }
        for (i, s) in out.ood_score.iter().enumerate() {
            scores.push(*s as f64);
            positives.push(i < chunk.len());
        }
    }
    let open = ood.is_some();
    Ok(StreamResult {
        accuracy: correct as f64 / seen.max(1) as f64,
        distinct: predicted.len(),
        ms_per_image: 1000.0 * started.elapsed().as_secs_f64() / total_images.max(1) as f64,
        auroc: if open { cliptta_udfs::kernels::auroc(&scores, &positives) } else { None },
        fpr95: if open { cliptta_udfs::kernels::fpr_at_tpr(&scores, &positives, 0.95) } else { None },
        guard_events,
        max_distance,
        recoveries: adapter.stats().recoveries,
    })
}

/// One line per stream on stderr: what the guard saw, how far the LayerNorms moved, and how
/// often the method returned them to the checkpoint by its own rule (SAR's recovery).
fn report_stream(corruption: Corruption, method: &str, r: &StreamResult) {
    eprintln!(
        "{} {method}: guard events {}, largest distance {:.4}, recoveries {}",
        corruption.name(),
        r.guard_events,
        r.max_distance,
        r.recoveries
    );
}

fn main() -> Result<()> {
    cliptta::allocator::retain_freed_memory();
    let mut args = Args::parse();
    args.methods.retain(|m| !m.trim().is_empty());
    args.open_methods.retain(|m| !m.trim().is_empty());
    let load = LoadOptions { device: args.device.parse()?, ..LoadOptions::default() };
    let model = Arc::new(ClipModel::load(&args.model, &load).context("loading the model")?);
    anyhow::ensure!(model.config().vision.image_size == SIDE, "the benchmark needs a {SIDE}px model");
    let test = FashionMnist::load_default(Split::Test).context("run scripts/install-datasets.sh first")?;
    let corruptions: Vec<Corruption> = if args.corruptions.is_empty() {
        Corruption::ALL.to_vec()
    } else {
        args.corruptions.iter().map(|c| c.parse::<Corruption>()).collect::<cliptta_bench::Result<_>>()?
    };
    let mut order: Vec<usize> = (0..test.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(args.seed));
    order.truncate(args.images.min(test.len()));
    let mnist = if args.open_set { Some(Mnist5k::load_default().context("run scripts/install-datasets.sh first")?) } else { None };

    println!(
        "model {} ({}) on {}, {} images per corruption, severity {}, batch {}{}",
        args.model.display(),
        &model.content_hash()[..12],
        args.device,
        order.len(),
        args.severity,
        args.batch,
        if args.open_set { format!(", open set +{} MNIST per batch", args.ood_batch) } else { String::new() }
    );
    let mut header = String::from("| corruption |");
    for m in &args.methods {
        header += &format!(" {m} acc | {m} classes | {m} ms/img |");
    }
    if args.open_set {
        for m in &args.open_methods {
            header += &format!(" {m}-open ACC | {m}-open AUROC | {m}-open FPR95 | {m}-open ms/img |");
        }
    }
    println!("{header}");
    println!("|{}", "---|".repeat(header.matches('|').count() - 1));
    let mut sums = vec![0f64; header.matches('|').count() - 2];
    for corruption in &corruptions {
        // Seeded by the corruption's place among all 15, so a run over a subset gives the same
        // rows as the full run.
        let ci = Corruption::ALL.iter().position(|c| c == corruption).unwrap_or(0);
        let seed = args.seed ^ ((ci as u64) << 32);
        let id: Vec<(Image28, u8)> = order
            .iter()
            .map(|&i| Ok((corruption.apply(&test.images[i], args.severity, seed ^ i as u64)?, test.labels[i])))
            .collect::<cliptta_bench::Result<_>>()?;
        let mut row = vec![];
        for m in &args.methods {
            let r = run_stream(&model, method_config(m, false, &args.settings)?, &id, None, args.batch, args.ood_batch)?;
            report_stream(*corruption, m, &r);
            row.extend([100.0 * r.accuracy, r.distinct as f64, r.ms_per_image]);
        }
        if let Some(mnist) = &mnist {
            let mut ood: Vec<Image28> = mnist
                .images
                .iter()
                .enumerate()
                .map(|(i, img)| corruption.apply(img, args.severity, seed ^ (1 << 40) ^ i as u64))
                .collect::<cliptta_bench::Result<_>>()?;
            // The file is sorted by digit; mix it so every batch sees every digit.
            ood.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            for m in &args.open_methods {
                let r = run_stream(&model, method_config(m, true, &args.settings)?, &id, Some(&ood), args.batch, args.ood_batch)?;
                report_stream(*corruption, &format!("{m}-open"), &r);
                row.extend([100.0 * r.accuracy, 100.0 * r.auroc.unwrap_or(f64::NAN), 100.0 * r.fpr95.unwrap_or(f64::NAN), r.ms_per_image]);
            }
        }
        for (s, v) in sums.iter_mut().zip(&row) {
            *s += v;
        }
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.2}")).collect();
        println!("| {} | {} |", corruption.name(), cells.join(" | "));
    }
    let n = corruptions.len() as f64;
    let cells: Vec<String> = sums.iter().map(|v| format!("{:.2}", v / n)).collect();
    println!("| **mean** | {} |", cells.join(" | "));
    Ok(())
}
