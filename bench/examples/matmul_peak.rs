//! The floor for model throughput: the matrix-multiply rate this machine reaches through candle,
//! and the FLOPs one image costs, so images/s can be read against what the hardware allows.
//!
//! ```text
//! cargo run --example matmul_peak -- --shape vit-b-32 --batch 64
//! ```
//! Prints GFLOP/s for a square 2048^3 product and for every dense-layer shape of the vision tower
//! at the given batch, then the forward FLOPs per image and the images/s that the measured peak
//! would give if the forward were nothing but matrix products.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use clap::Parser;
use cliptta::model::ClipConfig;

#[derive(Parser)]
struct Args {
    /// Model shape: vit-b-32 or vit-b-16.
    #[arg(long, default_value = "vit-b-32")]
    shape: String,
    /// Images per batch (sets the row count of the dense layers).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed repetitions per shape (the best is kept).
    #[arg(long, default_value_t = 5)]
    reps: usize,
}

/// Best GFLOP/s of `[m, k] x [k, n]` over `reps` runs, after one warm-up.
fn rate(m: usize, k: usize, n: usize, reps: usize) -> Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu)?;
    a.matmul(&b)?;
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        a.matmul(&b)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (m * k * n) as f64 / best / 1e9)
}

fn main() -> Result<()> {
    cliptta::allocator::retain_freed_memory();
    let args = Args::parse();
    let cfg = match args.shape.as_str() {
        "vit-b-32" => ClipConfig::vit_b_32(),
        "vit-b-16" => ClipConfig::vit_b_16(),
        other => anyhow::bail!("unknown shape {other}"),
    };
    let v = &cfg.vision;
    let tokens = v.num_positions();
    let rows = args.batch * tokens;
    let (d, h) = (v.hidden_size, v.intermediate_size);
    let patch_in = v.num_channels * v.patch_size * v.patch_size;
    println!("threads={} shape={} batch={} tokens={tokens}", candle_core::utils::get_num_threads(), args.shape, args.batch);
    println!("| product | m x k x n | GFLOP/s |");
    println!("|---|---|---|");
    let square = rate(2048, 2048, 2048, args.reps)?;
    println!("| square | 2048 x 2048 x 2048 | {square:.1} |");
    let shapes = [
        ("patch embedding", args.batch * v.patches_per_side().pow(2), patch_in, d),
        ("q/k/v (fused)", rows, d, 3 * d),
        ("attention out", rows, d, d),
        ("mlp fc1", rows, d, h),
        ("mlp fc2", rows, h, d),
    ];
    let mut dense_flops = 0.0;
    let mut dense_secs = 0.0;
    for (name, m, k, n) in shapes {
        let r = rate(m, k, n, args.reps)?;
        println!("| {name} | {m} x {k} x {n} | {r:.1} |");
        let f = 2.0 * (m * k * n) as f64 * if name == "patch embedding" { 1.0 } else { v.num_hidden_layers as f64 };
        dense_flops += f;
        dense_secs += f / (r * 1e9);
    }
    // Attention scores and weighted sum: two [tokens x head_dim x tokens] products per head.
    let attn_flops = (args.batch * v.num_hidden_layers * 2 * 2 * tokens * tokens * d) as f64;
    let proj_flops = (2 * args.batch * d * cfg.projection_dim) as f64;
    let per_image = (dense_flops + attn_flops + proj_flops) / args.batch as f64;
    println!();
    println!("forward GFLOP per image: {:.2} (dense layers {:.2}, attention {:.2})", per_image / 1e9, dense_flops / args.batch as f64 / 1e9, attn_flops / args.batch as f64 / 1e9);
    println!("floor at the square-product peak: {:.1} images/s", square * 1e9 / per_image);
    println!("floor at the measured dense-layer rates (attention at the square peak): {:.1} images/s", args.batch as f64 / (dense_secs + attn_flops / (square * 1e9)));
    Ok(())
}
