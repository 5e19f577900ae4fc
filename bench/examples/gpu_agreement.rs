//! Checks the CUDA path against the CPU path on the same checkpoint: image embeddings without
//! and with gradients, and the gradients of every vision LayerNorm parameter for a fixed loss.
//! The two paths share no kernel code (CPU: the fused CPU kernels in `model::fused`,
//! `fused_attention` and `fused_block`; CUDA: cuBLAS, candle's CUDA ops and `model::fused_cuda`),
//! so agreement checks both. Needs `--features cuda` and a GPU; `scripts/gpu_check.sh` runs it.
//!
//! ```text
//! cargo run --features cuda --example gpu_agreement -- --model data/models/default
//! ```
//! Prints the largest difference relative to the largest magnitude of each compared tensor, and
//! exits with an error if any is above the tolerance.

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use clap::Parser;

use cliptta::model::{ClipModel, DeviceSpec, Grad, LoadOptions};

#[derive(Parser)]
struct Args {
    /// Checkpoint directory (Hugging Face CLIP layout).
    #[arg(long, default_value = "data/models/default")]
    model: std::path::PathBuf,
    /// Images in the batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// The GPU.
    #[arg(long, default_value = "cuda:0")]
    device: String,
    /// Largest accepted relative difference for embeddings; gradients get ten times this.
    #[arg(long, default_value_t = 1e-3)]
    tolerance: f64,
}

fn relative_difference(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let diff = (&a - &b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?.max(1e-12);
    Ok(diff / scale)
}

/// Embeddings without gradients, embeddings with gradients, and the LayerNorm gradients of
/// `sum(z * direction)`.
fn run(model: &ClipModel, pixels: &Tensor, direction: &Tensor) -> Result<(Tensor, Tensor, Vec<Tensor>)> {
    let pixels = pixels.to_device(model.device())?;
    let direction = direction.to_device(model.device())?;
    let params = model.vision().init_params()?;
    let plain = model.image_embeddings(&pixels, &params, Grad::Disabled)?;
    let z = model.image_embeddings(&pixels, &params, Grad::Enabled)?;
    let grads = (&z * &direction)?.sum_all()?.backward()?;
    let mut out = Vec::new();
    for var in params.vars() {
        out.push(grads.get(var.as_tensor()).ok_or_else(|| anyhow::anyhow!("a LayerNorm parameter got no gradient"))?.clone());
    }
    Ok((plain, z, out))
}

fn main() -> Result<()> {
    cliptta::allocator::retain_freed_memory();
    let args = Args::parse();
    let gpu: DeviceSpec = args.device.parse()?;
    let cpu_model = ClipModel::load(&args.model, &LoadOptions { device: DeviceSpec::Cpu, ..LoadOptions::default() })?;
    let gpu_model = ClipModel::load(&args.model, &LoadOptions { device: gpu, ..LoadOptions::default() })?;
    let size = cpu_model.config().vision.image_size;
    let pixels = Tensor::randn(0f32, 1.0, (args.batch, 3, size, size), &Device::Cpu)?;
    let direction = Tensor::randn(0f32, 1.0, (args.batch, cpu_model.config().projection_dim), &Device::Cpu)?;
    let (cpu_plain, cpu_z, cpu_grads) = run(&cpu_model, &pixels, &direction)?;
    let (gpu_plain, gpu_z, gpu_grads) = run(&gpu_model, &pixels, &direction)?;
    println!("model={} batch={} device={}", args.model.display(), args.batch, args.device);
    let mut worst = Vec::new();
    for (what, c, g, tol) in [
        ("embeddings, no gradients", &cpu_plain, &gpu_plain, args.tolerance),
        ("embeddings, with gradients", &cpu_z, &gpu_z, args.tolerance),
    ] {
        let d = relative_difference(g, c)?;
        println!("{what}: relative difference {d:.2e}");
        worst.push((what.to_string(), d, tol));
    }
    let mut grad_worst = 0f64;
    for (c, g) in cpu_grads.iter().zip(&gpu_grads) {
        grad_worst = grad_worst.max(relative_difference(g, c)?);
    }
    println!("LayerNorm gradients ({} tensors): largest relative difference {grad_worst:.2e}", cpu_grads.len());
    worst.push(("LayerNorm gradients".into(), grad_worst, 10.0 * args.tolerance));
    for (what, d, tol) in worst {
        ensure!(d <= tol, "{what}: CUDA and CPU differ by {d:.2e} (tolerance {tol:.0e})");
    }
    println!("agree within tolerance");
    Ok(())
}
