//! `cliptta demo`: the main job on the embedded default model and the demo lake. Labels every
//! image of `data/demo/` (one stream under one shift, with OOD digits mixed in) zero-shot, with
//! TENT and with open-set CLIPTTA through the `cliptta(...)` table function, writes each run to
//! Parquet with its per-batch diagnostics beside it, and scores the runs in SQL against
//! `labels.csv` with the evaluation aggregates (accuracy on in-distribution images, AUROC and
//! FPR95 for OOD).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use cliptta::job::{write_batches, BATCHES_FILE};
use cliptta::model::{load_cached, LoadOptions};
use cliptta::sql::{ClipTtaExec, ClipTtaOptions, OptionValue};
use cliptta::tta::Method;
use include_dir::{include_dir, Dir};

use crate::cli::args::DemoArgs;
use crate::cli::commands::evaluate::{evaluate, percent, register_truth, sql_path, sql_text};
use crate::cli::commands::label::run_metadata;
use crate::cli::commands::report;
use crate::cli::commands::sql::session;

/// `data/demo`, compiled in so that an installed binary runs the demo from any directory.
static DEMO_LAKE: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/data/demo");

/// The embedded demo lake, written under the cache directory on first use.
fn demo_lake() -> anyhow::Result<PathBuf> {
    let root = cliptta::source::cache_root().join("lakes");
    let id = cliptta::source::embedded::content_id(&DEMO_LAKE);
    cliptta::source::embedded::materialise(&DEMO_LAKE, &root, "shift-demo", &id).context("writing the embedded demo lake")
}

/// COPY's Parquet options that record the run as `cliptta label` records it (`run_metadata`),
/// from the options the scan is given.
fn run_metadata_options(images: &str, model: &std::path::Path, pairs: &[(&str, String)]) -> anyhow::Result<String> {
    let typed: Vec<(String, OptionValue)> = pairs.iter().map(|(k, v)| (k.to_string(), OptionValue::Text(v.clone()))).collect();
    let options = ClipTtaOptions::parse(&typed).map_err(|errors| crate::cli::UsageError(errors.join("\n")))?;
    let load = LoadOptions { device: options.device, ..LoadOptions::default() };
    let checkpoint = load_cached(model, &load).with_context(|| format!("loading the model {}", model.display()))?;
    let metadata = run_metadata(images, &options, checkpoint.content_hash());
    Ok(metadata.iter().map(|(k, v)| format!("'format.metadata::{k}' '{}'", sql_text(v))).collect::<Vec<_>>().join(", "))
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let lake = match &args.lake {
        Some(dir) => dir.clone(),
        None => demo_lake()?,
    };
    let model = match &args.model {
        Some(dir) => dir.clone(),
        None => cliptta::source::default_model_dir().context("writing the embedded default model")?,
    };
    let labels = lake.join("labels.csv");
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let ctx = session();
    let truth = register_truth(&ctx, &labels).await?;
    let classes = cliptta::source::DEFAULT_MODEL_CLASSES.join(",");
    println!("cliptta demo: lake {} , model {} , device {}", lake.display(), model.display(), args.device);
    println!("classes: {classes}");
    println!();
    println!("| method | seconds | images/s | ID accuracy | AUROC | FPR95 | flagged OOD | rows ok/total | Parquet |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut reports = Vec::new();
    for method in &args.methods {
        let out = args.out.join(format!("{method}.parquet"));
        // Methods with an open-set variant make OOD decisions; every method's score is ranked
        // for AUROC.
        let parsed: Method = method.parse().map_err(|e| crate::cli::UsageError(format!("--methods: {e}")))?;
        let mut pairs = vec![
            ("classes", classes.clone()),
            ("model", model.display().to_string()),
            ("method", method.clone()),
            ("adapt_batch_size", args.adapt_batch_size.to_string()),
            ("seed", args.seed.to_string()),
            ("device", args.device.clone()),
        ];
        if parsed.has_open_set() {
            pairs.push(("open_set", "true".to_string()));
        }
        let images = format!("{}/images/*.png", lake.display());
        let copy = format!(
            "COPY (SELECT * FROM cliptta('{}', {})) TO '{}' STORED AS PARQUET OPTIONS ({})",
            sql_text(&images),
            pairs.iter().map(|(k, v)| format!("'{k}', '{}'", sql_text(v))).collect::<Vec<_>>().join(", "),
            sql_path(&out),
            run_metadata_options(&images, &model, &pairs)?,
        );
        let started = Instant::now();
        let plan = ctx.sql(&copy).await?.create_physical_plan().await?;
        datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx()).await.with_context(|| format!("labelling with {method}"))?;
        let seconds = started.elapsed().as_secs_f64();
        if let Some(exec) = ClipTtaExec::find(&plan).as_ref().and_then(|p| p.downcast_ref::<ClipTtaExec>()) {
            let path = args.out.join(format!("{method}.{BATCHES_FILE}"));
            write_batches(&path, &[exec.diagnostics()?]).with_context(|| format!("writing {}", path.display()))?;
        }
        let scores = evaluate(&ctx, &out, Some(truth)).await?;
        println!(
            "| {method} | {seconds:.1} | {:.1} | {} | {} | {} | {} | {}/{} | {} |",
            scores.total as f64 / seconds,
            percent(scores.accuracy),
            percent(scores.auroc),
            percent(scores.fpr95),
            percent(scores.flagged),
            scores.ok,
            scores.total,
            out.display()
        );
        reports.push(out);
    }
    println!();
    // After the table, so that it prints as one block.
    for out in &reports {
        let page = out.with_extension("html");
        report::write(out, Some(&labels), &page).await.with_context(|| format!("writing the report {}", page.display()))?;
        println!("report: {}", page.display());
    }
    println!();
    println!("Query the results with e.g.: cargo run -- sql \"SELECT label, count(*) FROM '{}' GROUP BY label\"",
        args.out.join("cliptta.parquet").display());
    Ok(())
}
