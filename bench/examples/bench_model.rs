//! Model throughput: zero-shot forward images/s and forward+backward (LayerNorm gradients) time
//! per batch, with peak resident memory, on a CLIP with random weights.
//!
//! ```text
//! cargo run --example bench_model -- --shape vit-b-32 --batch 32 --batch 64
//! cargo run --example bench_model -- --model data/models/default --batch 128
//! ```
//! The last column is one full CLIPTTA batch (closed set, official settings: 10 steps with memory
//! replay, then the final forward), measured on the second batch of a stream so the memory is
//! in use.
//! Results are recorded in BENCHMARKS.md. Peak memory is the process high-water mark (VmHWM)
//! after each measurement, so it only grows from row to row.

use std::time::Instant;

use anyhow::Result;
use candle_core::Tensor;
use clap::Parser;
use std::sync::Arc;

use cliptta::model::{ClipConfig, ClipModel, Grad, LoadOptions};
use cliptta::tta::{Adapter, MethodConfig};

#[derive(Parser)]
struct Args {
    /// Model shape with random weights: vit-b-32 or vit-b-16.
    #[arg(long, default_value = "vit-b-32")]
    shape: String,
    /// Benchmark this checkpoint instead of a random one.
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Keep the random checkpoint in this directory and reuse it on later runs (generating
    /// ViT-B weights takes longer than the benchmark).
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
    /// Batch sizes to measure (repeatable).
    #[arg(long = "batch", default_values_t = vec![32usize, 64])]
    batches: Vec<usize>,
    /// Skip the full CLIPTTA batch (slow on ViT-B shapes).
    #[arg(long)]
    no_tta: bool,
    /// Device: cpu or cuda:N (the latter needs `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Also print one JSON object per batch (for scripts/bench_pytorch.py).
    #[arg(long)]
    json: bool,
    /// Timed repetitions per measurement (after one warm-up).
    #[arg(long, default_value_t = 2)]
    reps: usize,
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<()> {
    cliptta::allocator::retain_freed_memory();
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let model_dir = match &args.model {
        Some(d) => d.clone(),
        None => {
            let cfg = match args.shape.as_str() {
                "vit-b-32" => ClipConfig::vit_b_32(),
                "vit-b-16" => ClipConfig::vit_b_16(),
                other => anyhow::bail!("unknown shape {other}"),
            };
            let target = args.keep.clone().unwrap_or_else(|| dir.path().to_path_buf());
            if !target.join("model.safetensors").exists() {
                std::fs::create_dir_all(&target)?;
                let words: Vec<String> = ["a", "photo", "of"].iter().map(|s| s.to_string()).collect();
                cliptta::model::write_random_checkpoint(&target, &cfg, &words, 0)?;
            }
            target
        }
    };
    let device: cliptta::model::DeviceSpec = args.device.parse()?;
    let model = Arc::new(ClipModel::load(&model_dir, &LoadOptions { device, ..LoadOptions::default() })?);
    let cfg = model.config().clone();
    let classes: Vec<String> = (0..10).map(|i| format!("class{i}")).collect();
    let params = model.vision().init_params()?;
    let size = cfg.vision.image_size;
    let label = args.model.as_ref().map_or(args.shape.clone(), |d| d.display().to_string());
    println!("model={label} threads={} (candle CPU)", candle_core::utils::get_num_threads());
    println!("| batch | forward images/s | forward+backward s/batch | backward/forward | CLIPTTA batch s (images/s) | peak RSS MiB |");
    println!("|---|---|---|---|---|---|");
    for &batch in &args.batches {
        let pixels = Tensor::randn(0f32, 1.0, (batch, 3, size, size), model.device())?;
        let direction = Tensor::randn(0f32, 1.0, (batch, cfg.projection_dim), model.device())?;
        model.image_features(&pixels, &params, Grad::Disabled)?;
        model.device().synchronize()?;
        let t = Instant::now();
        for _ in 0..args.reps {
            model.image_features(&pixels, &params, Grad::Disabled)?;
        }
        model.device().synchronize()?;
        let fwd = t.elapsed().as_secs_f64() / args.reps as f64;
        let step = || -> Result<()> {
            let z = model.image_embeddings(&pixels, &params, Grad::Enabled)?;
            let loss = (z * &direction)?.sum_all()?;
            let grads = loss.backward()?;
            anyhow::ensure!(grads.get(params.vars()[0].as_tensor()).is_some(), "no gradient");
            Ok(())
        };
        step()?;
        let t = Instant::now();
        for _ in 0..args.reps {
            step()?;
        }
        model.device().synchronize()?;
        let fb = t.elapsed().as_secs_f64() / args.reps as f64;
        if args.no_tta {
            println!("| {batch} | {:.1} | {:.2} | {:.2} | - | {:.0} |", batch as f64 / fwd, fb, fb / fwd, peak_rss_mib());
            if args.json {
                let row = serde_json::json!({"batch": batch, "forward_s": fwd, "step_s": fb, "peak_rss_mib": peak_rss_mib()});
                println!("{row}");
            }
            continue;
        }
        let mut adapter = Adapter::new(
            model.clone(),
            &classes,
            &["a photo of a {}".to_string()],
            MethodConfig::from_name("cliptta", false)?,
        )?;
        adapter.adapt_and_predict(&pixels)?;
        let t = Instant::now();
        adapter.adapt_and_predict(&pixels)?;
        let tta = t.elapsed().as_secs_f64();
        println!(
            "| {batch} | {:.1} | {:.2} | {:.2} | {:.2} ({:.1}) | {:.0} |",
            batch as f64 / fwd,
            fb,
            fb / fwd,
            tta,
            batch as f64 / tta,
            peak_rss_mib()
        );
        if args.json {
            let row = serde_json::json!({"batch": batch, "forward_s": fwd, "step_s": fb, "cliptta_batch_s": tta, "peak_rss_mib": peak_rss_mib()});
            println!("{row}");
        }
    }
    Ok(())
}
