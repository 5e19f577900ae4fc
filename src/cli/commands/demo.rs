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
use cliptta::sql::ClipTtaExec;
use cliptta::tta::Method;
use include_dir::{include_dir, Dir};

use crate::cli::args::DemoArgs;
use crate::cli::commands::evaluate::{evaluate, percent, register_truth, sql_path};
use crate::cli::commands::sql::session;

/// `data/demo`, compiled in so that an installed binary runs the demo from any directory.
static DEMO_LAKE: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/data/demo");

/// The embedded demo lake, written under the cache directory on first use.
fn demo_lake() -> anyhow::Result<PathBuf> {
    let root = cliptta::source::cache_root().join("lakes");
    let id = cliptta::source::embedded::content_id(&DEMO_LAKE);
    cliptta::source::embedded::materialise(&DEMO_LAKE, &root, "shift-demo", &id).context("writing the embedded demo lake")
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
    for method in &args.methods {
        let out = args.out.join(format!("{method}.parquet"));
        // Methods with an open-set variant make OOD decisions; every method's score is ranked
        // for AUROC.
        let parsed: Method = method.parse().map_err(|e| crate::cli::UsageError(format!("--methods: {e}")))?;
        let open_set = if parsed.has_open_set() { ", 'open_set', true" } else { "" };
        let copy = format!(
            "COPY (SELECT * FROM cliptta('{}/images/*.png', 'classes', '{classes}', 'model', '{}', \
             'method', '{method}'{open_set}, 'adapt_batch_size', {}, 'seed', {}, 'device', '{}')) \
             TO '{}' STORED AS PARQUET",
            sql_path(&lake),
            sql_path(&model),
            args.adapt_batch_size,
            args.seed,
            args.device.replace('\'', "''"),
            sql_path(&out)
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
    }
    println!();
    println!("Query the results with e.g.: cargo run -- sql \"SELECT label, count(*) FROM '{}' GROUP BY label\"",
        args.out.join("cliptta.parquet").display());
    Ok(())
}
