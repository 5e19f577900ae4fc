//! Trains the embedded default model: a small CLIP learned contrastively on the Fashion-MNIST
//! training set, saved in the Hugging Face layout, then evaluated zero-shot on the clean test
//! set with the prompt `a photo of a {}`.
//!
//! ```text
//! scripts/install-datasets.sh
//! cargo run --example pretrain -- --out data/models/default
//! ```
//! Writes `config.json`, `model.safetensors`, `tokenizer.json`, `preprocessor_config.json` and a
//! `README.md` with the command, training time, losses and accuracy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use cliptta_bench::data::{FashionMnist, Split, CLASS_NAMES, PIXELS, SIDE};
use cliptta::image::to_tensor;
use cliptta::model::{Activation, ClipConfig, ClipModel, LoadOptions, PreprocessorConfig};
use cliptta_bench::pretrain::{train, CaptionSet, PretrainConfig, TrainingSet};
use cliptta::tta::{Adapter, MethodConfig};

#[derive(Parser)]
struct Args {
    /// Output directory.
    #[arg(long, default_value = "data/models/default")]
    out: PathBuf,
    /// Passes over the training set.
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    /// Seed for weights, order and captions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on the first N images only (quick checks).
    #[arg(long)]
    limit: Option<usize>,
}

/// Fashion-MNIST's pixel mean and standard deviation (over the training set, in [0, 1]).
const MEAN: f32 = 0.2860;
const STD: f32 = 0.3530;

fn default_shape() -> ClipConfig {
    let mut c = ClipConfig::vit_b_32();
    c.vision.image_size = SIDE;
    c.vision.patch_size = 4;
    c.vision.hidden_size = 128;
    c.vision.intermediate_size = 512;
    c.vision.num_hidden_layers = 4;
    c.vision.num_attention_heads = 4;
    c.vision.activation = Activation::QuickGelu;
    c.text.hidden_size = 128;
    c.text.intermediate_size = 512;
    c.text.num_hidden_layers = 3;
    c.text.num_attention_heads = 4;
    c.text.max_position_embeddings = 16;
    c.projection_dim = 128;
    c
}

fn main() -> Result<()> {
    cliptta::allocator::retain_freed_memory();
    let args = Args::parse();
    let train_split = FashionMnist::load_default(Split::Train).context("run scripts/install-datasets.sh first")?;
    let test_split = FashionMnist::load_default(Split::Test)?;
    let n = args.limit.unwrap_or(train_split.len()).min(train_split.len());
    let data = TrainingSet {
        pixels: train_split.images[..n].iter().flatten().copied().collect(),
        labels: train_split.labels[..n].to_vec(),
        side: SIDE,
    };
    let mut preprocessor = PreprocessorConfig::clip_default(SIDE);
    preprocessor.mean = [MEAN; 3];
    preprocessor.std = [STD; 3];
    let cfg = PretrainConfig {
        clip: default_shape(),
        preprocessor,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        warmup_fraction: 0.1,
        seed: args.seed,
    };
    let captions = CaptionSet::fashion_mnist();
    anyhow::ensure!(captions.class_names() == CLASS_NAMES, "caption classes differ from the dataset's");
    println!("training on {n} images, {} epochs, batch {}", args.epochs, args.batch_size);
    let started = Instant::now();
    let mut window = Vec::new();
    let report = train(&cfg, &data, &captions, &args.out, |epoch, step, loss| {
        window.push(loss);
        if window.len() == 20 {
            let mean = window.iter().sum::<f32>() / 20.0;
            println!("epoch {epoch} step {step:>4} loss {mean:.4} ({:.0} s)", started.elapsed().as_secs_f64());
            window.clear();
        }
    })?;
    for (e, l) in report.epoch_losses.iter().enumerate() {
        println!("epoch {e}: mean loss {l:.4}");
    }

    let model = Arc::new(ClipModel::load(&args.out, &LoadOptions::default())?);
    let classes: Vec<String> = CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    let template = vec!["a photo of a {}".to_string()];
    let adapter = Adapter::new(model.clone(), &classes, &template, MethodConfig::from_name("zero_shot", false)?)?;
    let pre = model.preprocessor().clone();
    let mut correct = 0usize;
    let eval_started = Instant::now();
    for (imgs, labels) in test_split.images.chunks(500).zip(test_split.labels.chunks(500)) {
        let batch: Vec<Vec<f32>> = imgs
            .iter()
            .map(|img| {
                let gray = image::GrayImage::from_raw(SIDE as u32, SIDE as u32, img[..PIXELS].to_vec()).expect("28x28");
                cliptta::image::preprocess(&image::DynamicImage::ImageLuma8(gray), &pre)
            })
            .collect::<cliptta::Result<_>>()?;
        let out = adapter.predict(&to_tensor(&batch, SIDE, model.device())?)?;
        correct += out.labels.iter().zip(labels).filter(|(p, l)| **p == **l as u32).count();
    }
    let accuracy = correct as f64 / test_split.len() as f64;
    println!(
        "zero-shot accuracy on the clean test set: {:.2}% ({correct}/{}), eval {:.1} s",
        100.0 * accuracy,
        test_split.len(),
        eval_started.elapsed().as_secs_f64()
    );
    let command: Vec<String> = std::env::args().collect();
    let readme = format!(
        "# cliptta default model\n\n\
A small CLIP trained from scratch by this project, because no pretrained checkpoint can be\n\
downloaded here. Hugging Face CLIP layout: loads with `cliptta::model::ClipModel::load` and with\n\
`transformers.CLIPModel.from_pretrained`.\n\n\
- Data: Fashion-MNIST training set (60,000 images of 28x28, 10 classes; Zalando Research, MIT licence),\n\
  from the Debian package `dataset-fashion-mnist`.\n\
- Captions: {} templates x 2-4 names per class (`src/pretrain/captions.rs`), sampled per image and step;\n\
  word-level tokenizer built from their words (`tokenizer.json`).\n\
- Shape: ViT {} layers x {} wide, patch {} on {} px; text {} layers x {} wide, context {}; projection {}.\n\
- Training: {} images, {} epochs, batch {}, AdamW (lr {} peak, warm-up 10%, cosine), weight decay {},\n\
  seed {}, symmetric contrastive loss with same-class captions as soft positives.\n\
- Command: `cargo run --example pretrain -- {}` (dev profile: numeric crates at opt-level 3, see BUILDING.md)\n\
- Training time: {:.1} min on this project's 2-core CPU machine ({} steps).\n\
- Mean loss per epoch: {:?}\n\
- Zero-shot accuracy on the clean Fashion-MNIST test set (10,000 images), prompt `a photo of a {{}}`: **{:.2}%**.\n\n\
Licence: the weights are derived from Fashion-MNIST (MIT) and are released under this project's licence.\n",
        captions.templates.len(),
        cfg.clip.vision.num_hidden_layers,
        cfg.clip.vision.hidden_size,
        cfg.clip.vision.patch_size,
        SIDE,
        cfg.clip.text.num_hidden_layers,
        cfg.clip.text.hidden_size,
        cfg.clip.text.max_position_embeddings,
        cfg.clip.projection_dim,
        n,
        args.epochs,
        args.batch_size,
        args.lr,
        args.weight_decay,
        args.seed,
        command[1..].join(" "),
        report.seconds / 60.0,
        report.steps,
        report.epoch_losses,
        100.0 * accuracy
    );
    std::fs::write(args.out.join("README.md"), readme)?;
    Ok(())
}
