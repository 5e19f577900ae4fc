//! End-to-end benchmark: SQL over an image lake to Parquet, with the time split by stage.
//!
//! ```text
//! cargo run --example bench_lake -- --lake demo                   # data/lake/images (28x28 PNGs)
//! cargo run --example bench_lake -- --lake jpeg --images 1000     # 500x375 JPEGs
//! ```
//!
//! The JPEG lake is made from real images: Fashion-MNIST test images (`scripts/install-datasets.sh`)
//! upscaled to 375x375, tinted and centred on a 500x375 canvas, saved as JPEG (quality 90) under
//! `--lake-dir` (reused when it already holds `--images` files). Each method runs
//! `SELECT location, status, label, confidence, ood_score FROM cliptta(...)` through a
//! DataFusion session and writes the rows to a Parquet file as they arrive (as `cliptta label`
//! does). Stage times come from the plan's `ClipTtaExec` metrics (fetch, decode, preprocess,
//! adaptation: each summed over the threads that ran it, so concurrent stages can add up to more
//! than the wall time) and from timing the Parquet writer; the share column is each stage's busy
//! time over the wall time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use cliptta_bench::data::{FashionMnist, Split, CLASS_NAMES};
use cliptta::sql::{ClipTtaExec, ClipTtaMetrics};
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use image::{imageops, ImageBuffer, Rgb, RgbImage};
use parquet::arrow::ArrowWriter;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lake {
    /// The demo lake, `data/lake/images/` (1,000 PNGs of 28x28).
    Demo,
    /// 500x375 JPEGs made from Fashion-MNIST test images.
    Jpeg,
}

#[derive(Parser)]
struct Args {
    /// Which lake to read.
    #[arg(long, value_enum, default_value = "demo")]
    lake: Lake,
    /// Images in the JPEG lake.
    #[arg(long, default_value_t = 1000)]
    images: usize,
    /// Where the JPEG lake is written (and reused).
    #[arg(long, default_value = "target/bench-lake-jpeg")]
    lake_dir: PathBuf,
    /// Methods to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = ["zero_shot".to_string(), "cliptta".to_string()])]
    methods: Vec<String>,
    /// The model directory.
    #[arg(long, default_value = "data/models/default")]
    model: PathBuf,
    /// Adaptation batch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Fetches and decodes in flight per partition (the `concurrency` option).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Open set (OOD scores and the OCE loss).
    #[arg(long)]
    open_set: bool,
    /// Where the Parquet files go (a temporary directory when absent).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    cliptta::allocator::retain_freed_memory();
    let args = Args::parse();
    let location = match args.lake {
        Lake::Demo => PathBuf::from("data/lake/images"),
        Lake::Jpeg => {
            write_jpeg_lake(&args.lake_dir, args.images)?;
            args.lake_dir.clone()
        }
    };
    let location = location.canonicalize().with_context(|| format!("lake {}", location.display()))?;
    let model = args.model.canonicalize().with_context(|| format!("model {}", args.model.display()))?;
    let tmp = tempfile::tempdir()?;
    let out_dir = args.out.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&out_dir)?;

    println!("lake: {} ({} threads)", location.display(), rayon::current_num_threads());
    println!(
        "| method | images | wall s | images/s | fetch | decode | preprocess | adaptation | write | model load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for method in &args.methods {
        let out = out_dir.join(format!("{method}.parquet"));
        let run = run_query(&args, &location, &model, method, &out).await?;
        let cell = |secs: f64| format!("{secs:.2} s ({:.0}%)", 100.0 * secs / run.wall);
        println!(
            "| {method} | {} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {:.2} s |",
            run.rows,
            run.wall,
            run.rows as f64 / run.wall,
            cell(run.fetch),
            cell(run.decode),
            cell(run.preprocess),
            cell(run.adapt),
            cell(run.write),
            run.load,
        );
    }
    Ok(())
}

struct Run {
    rows: usize,
    wall: f64,
    fetch: f64,
    decode: f64,
    preprocess: f64,
    adapt: f64,
    write: f64,
    load: f64,
}

async fn run_query(args: &Args, location: &Path, model: &Path, method: &str, out: &Path) -> Result<Run> {
    let ctx = SessionContext::new();
    cliptta::sql::register(&ctx);
    let sql = format!(
        "SELECT location, status, label, confidence, ood_score FROM cliptta('{}/', 'classes', '{}', 'model', '{}', \
         'method', '{method}', 'adapt_batch_size', {}, 'concurrency', {}, 'open_set', {})",
        location.display(),
        CLASS_NAMES.join(","),
        model.display(),
        args.batch,
        args.concurrency,
        args.open_set,
    );
    let start = Instant::now();
    let plan = ctx.sql(&sql).await?.create_physical_plan().await?;
    let exec = ClipTtaExec::find(&plan).context("the plan has no ClipTtaExec")?;
    let mut writer = ArrowWriter::try_new(std::fs::File::create(out)?, plan.schema(), None)?;
    let mut stream = execute_stream(plan, ctx.task_ctx())?;
    let (mut rows, mut write) = (0, 0.0);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        let t = Instant::now();
        writer.write(&batch)?;
        write += t.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    writer.close()?;
    write += t.elapsed().as_secs_f64();
    let wall = start.elapsed().as_secs_f64();

    let exec = exec.downcast_ref::<ClipTtaExec>().context("not a ClipTtaExec")?;
    let metrics = exec.live_metrics();
    let secs = |f: fn(&ClipTtaMetrics) -> usize| metrics.iter().map(f).sum::<usize>() as f64 / 1e9;
    let ok: usize = metrics.iter().map(|m| m.rows_ok.value()).sum();
    if ok != rows {
        bail!("{method}: {rows} rows written but {ok} predicted (failed: {})", rows - ok.min(rows));
    }
    Ok(Run {
        rows,
        wall,
        fetch: secs(|m| m.fetch_time.value()),
        decode: secs(|m| m.decode_time.value()),
        preprocess: secs(|m| m.preprocess_time.value()),
        adapt: secs(|m| m.adapt_time.value()),
        write,
        load: secs(|m| m.load_time.value()),
    })
}

/// Writes `count` 500x375 JPEGs made from Fashion-MNIST test images into `dir`, unless it
/// already holds exactly that many.
fn write_jpeg_lake(dir: &Path, count: usize) -> Result<()> {
    let existing = std::fs::read_dir(dir).map(|d| d.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "jpg")).count());
    if existing.as_ref().is_ok_and(|&n| n == count) {
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let test = FashionMnist::load_default(Split::Test)?;
    if count > test.len() {
        bail!("--images {count}: Fashion-MNIST has {} test images", test.len());
    }
    let started = Instant::now();
    for (i, pixels) in test.images.iter().take(count).enumerate() {
        let gray = cliptta_bench::data::to_gray_image(pixels);
        let big = imageops::resize(&gray, 375, 375, imageops::FilterType::Triangle);
        // A tint and a background that vary by image, so the JPEGs are colour images with
        // content around the garment, not upscaled grayscale only.
        let tint = [200 + (i * 7 % 56) as u16, 200 + (i * 13 % 56) as u16, 200 + (i * 29 % 56) as u16];
        let background = Rgb([(i * 3 % 40) as u8, (i * 5 % 40) as u8, (i * 11 % 40) as u8]);
        let mut canvas: RgbImage = ImageBuffer::from_pixel(500, 375, background);
        for (x, y, p) in big.enumerate_pixels() {
            let v = u16::from(p[0]);
            let px = Rgb(tint.map(|t| (v * t / 255) as u8));
            if v > 0 {
                canvas.put_pixel(x + 62, y, px);
            }
        }
        let path = dir.join(format!("{i:05}.jpg"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut file, 90).encode_image(&canvas)?;
    }
    eprintln!("wrote {count} JPEGs of 500x375 to {} in {:.1} s", dir.display(), started.elapsed().as_secs_f64());
    Ok(())
}
