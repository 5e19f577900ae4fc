//! `cliptta report RESULT [--labels CSV] --out report.html`: one self-contained HTML page about
//! a labelling run, to read a run without writing SQL and to pass it on as a single file.
//!
//! RESULT is what `cliptta label` wrote: a labels Parquet file `NAME.parquet` (its per-batch
//! diagnostics beside it at `NAME.batches.parquet`), or an output directory (the part files its
//! manifests commit, diagnostics at `DIR/batches.parquet`). The page has the run's settings (the
//! files' `cliptta.*` key/value metadata), status counts, the class histogram, the confidence
//! and OOD-score histograms, the per-batch adaptation curves and thumbnails; with `--labels`
//! also the ID accuracy, a confusion matrix, AUROC and FPR95, and calibration (ECE and a
//! reliability diagram).
//!
//! Every number is computed by DataFusion SQL over the Parquet with the cliptta-udfs
//! aggregates, with the expressions `demo` and `compare` use (`evaluate.rs`), so the page agrees
//! with what `cliptta sql` gives; the page lists its queries at the end. Each number also sits
//! in a `data-metric`/`data-value` attribute, exact, for tools and tests. Charts (SVG) and
//! thumbnails (base64 PNG) are inline: the file needs no network and no JavaScript.

mod plots;
mod thumbnails;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use cliptta::job::{checkpoint_batches, row_count, sort_batches, write_atomically, Manifest, BATCHES_FILE};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::Serialize;

use crate::cli::args::ReportArgs;
use crate::cli::commands::evaluate::{percent, register_truth, Truth};
use crate::cli::commands::sql::session;
use crate::cli::UsageError;
use plots::{Bin, Marker, ReliabilityBin, Series};
use thumbnails::{Group, Request, Thumbnails};

/// The predictions, one file or many read as one table.
const LABELLED: &str = "labelled";
/// The per-batch diagnostics.
const BATCHES: &str = "batches";
/// The predictions joined to the truth (`labels`, registered by [`register_truth`]) exactly as
/// `evaluate` joins them: a truth `path` matches the end of a location.
const JOINED: &str = "labelled p LEFT JOIN labels l ON p.location LIKE concat('%/', l.path)";
/// Columns every labels file has (`sql/schema.rs`); `location` is optional (a `cliptta_table`
/// scan keeps its own columns), and without it there are no thumbnails and no truth to match.
const REQUIRED_COLUMNS: [&str; 6] = ["label", "label_id", "confidence", "ood_score", "is_ood", "status"];
/// Key/value metadata of one part file only, not of the run (`job/checkpoint.rs`).
const PER_PART_KEYS: [&str; 2] = ["cliptta.commit", "cliptta.partition"];
/// Classes drawn in the class histogram and shown with thumbnails; a table lists the rest.
const MAX_CLASSES: usize = 40;
/// Largest class count for which the confusion matrix is drawn.
const MAX_CONFUSION_CLASSES: usize = 40;
/// Thumbnails per predicted class, and at each end of the OOD-score ranking.
const PER_CLASS: usize = 4;
const PER_END: usize = 8;
/// Bins of the confidence histogram (on `[0, 1]`) and of the OOD-score histogram (on the
/// scores' range).
const CONFIDENCE_BINS: usize = 20;
const OOD_BINS: usize = 30;
/// Bins of `ece(...)` and the reliability diagram: the same 10, so the diagram shows the terms
/// the ECE adds up.
const CALIBRATION_BINS: usize = 10;
/// The per-batch curves: title, y axis, columns (one curve each).
const CURVES: [(&str, &str, &[&str]); 5] = [
    ("Loss at the first and last step", "loss", &["loss_first", "loss_last"]),
    ("OOD threshold", "threshold", &["threshold"]),
    ("Share judged in-distribution", "id_fraction", &["id_fraction"]),
    ("Relative distance from the checkpoint", "distance", &["distance"]),
    ("Classes predicted", "classes", &["classes_predicted"]),
];

/// What RESULT names.
#[derive(Debug, Clone)]
struct Run {
    /// As given, for messages.
    shown: String,
    /// The labels: one file, or a directory's committed part files in commit order.
    parts: Vec<PathBuf>,
    /// Where the diagnostics file would be.
    batches: PathBuf,
    /// The output directory, for a directory run.
    directory: Option<PathBuf>,
}

impl Run {
    /// Finds the labels and diagnostics of `result`: a directory (checkpointed `label`
    /// output) or a file (anything else that exists).
    fn locate(result: &Path) -> anyhow::Result<Self> {
        let shown = result.display().to_string();
        if result.is_dir() {
            let parts = committed_parts(result)?;
            if parts.is_empty() {
                return Err(UsageError(format!("{shown} holds no labels: no committed part-*.parquet file")).into());
            }
            return Ok(Self { shown, parts, batches: result.join(BATCHES_FILE), directory: Some(result.to_path_buf()) });
        }
        if !result.is_file() {
            return Err(UsageError(format!("{shown} does not exist")).into());
        }
        // `label` writes `NAME.batches.parquet` beside `NAME.parquet` (label.rs, `batches_path`).
        let stem = result.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let batches = result.with_file_name(format!("{stem}.{BATCHES_FILE}"));
        Ok(Self { shown, parts: vec![result.to_path_buf()], batches, directory: None })
    }
}

/// The part files `dir`'s manifests commit, partition by partition in commit order. A killed
/// run can leave a part its manifest does not name yet; that part is not part of the output,
/// so it is not read. A directory without manifests (its parts copied elsewhere) gives every
/// `part-*.parquet` in name order.
fn committed_parts(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let manifests: Vec<&String> = names.iter().filter(|n| n.starts_with("manifest-p") && n.ends_with(".json")).collect();
    if manifests.is_empty() {
        return Ok(names.iter().filter(|n| n.starts_with("part-") && n.ends_with(".parquet")).map(|n| dir.join(n)).collect());
    }
    let mut parts = Vec::new();
    for name in manifests {
        let path = dir.join(name);
        if let Some(manifest) = Manifest::read(&path).with_context(|| format!("cannot read {}", path.display()))? {
            parts.extend(manifest.commits.iter().map(|c| dir.join(&c.part)));
        }
    }
    Ok(parts)
}

/// A path as text for DataFusion, which takes paths as URL strings.
fn utf8(path: &Path) -> anyhow::Result<&str> {
    path.to_str().with_context(|| format!("{} is not valid UTF-8", path.display()))
}

/// Registers the labels as table `labelled` and checks they are labels; says whether they
/// have a `location` column.
async fn register_labels(ctx: &SessionContext, run: &Run) -> anyhow::Result<bool> {
    let paths = run.parts.iter().map(|p| utf8(p).map(str::to_string)).collect::<anyhow::Result<Vec<String>>>()?;
    // The files are named one by one, so no extension filter: a `COPY ... TO 'x.pq'` is read too.
    let options = ParquetReadOptions::new().file_extension("");
    let frame = ctx.read_parquet(paths, options).await.with_context(|| format!("cannot read the labels in {}", run.shown))?;
    let schema = frame.schema().clone();
    for column in REQUIRED_COLUMNS {
        if schema.field_with_unqualified_name(column).is_err() {
            return Err(UsageError(format!("{} is not a cliptta labels file: it has no `{column}` column", run.shown)).into());
        }
    }
    ctx.register_table(LABELLED, frame.into_view())?;
    Ok(schema.field_with_unqualified_name("location").is_ok())
}

/// Where the diagnostics come from, or why there are none.
#[derive(Debug, Clone, PartialEq)]
enum Diagnostics {
    /// Registered as table `batches`; the text names the source.
    Found(String),
    /// None; the text says what was looked for.
    Missing(String),
}

/// Registers the per-batch diagnostics as table `batches`.
async fn register_diagnostics(ctx: &SessionContext, run: &Run) -> anyhow::Result<Diagnostics> {
    let shown = run.batches.display().to_string();
    if run.batches.is_file() {
        ctx.register_parquet(BATCHES, utf8(&run.batches)?, ParquetReadOptions::new())
            .await
            .with_context(|| format!("cannot read the diagnostics in {shown}"))?;
        return Ok(Diagnostics::Found(shown));
    }
    let Some(dir) = &run.directory else {
        return Ok(Diagnostics::Missing(format!("{shown} not found")));
    };
    // `label` writes batches.parquet when the run ends; after a killed run each commit still
    // holds its batches' diagnostics, which `cliptta_batches(dir)` reads back the same way.
    let committed = match checkpoint_batches(dir) {
        Ok(batches) => batches,
        Err(e) => return Ok(Diagnostics::Missing(format!("{shown} not found, and none in the commits: {e}"))),
    };
    if row_count(&committed) == 0 {
        return Ok(Diagnostics::Missing(format!("{shown} not found, and none in the commits")));
    }
    let sorted = sort_batches(&committed).with_context(|| format!("cannot read the diagnostics committed in {}", dir.display()))?;
    ctx.register_batch(BATCHES, sorted)?;
    Ok(Diagnostics::Found(format!("the commits of {} (cliptta_batches; {BATCHES_FILE} not found)", dir.display())))
}

/// A query's result, read by column name as the few types the page needs, whatever Arrow
/// types DataFusion chose (strings come back from Parquet as Utf8View, scores as Float32).
struct Rows(Vec<RecordBatch>);

impl Rows {
    /// Column `name` of every batch, cast to `to`.
    fn column(&self, name: &str, to: &DataType) -> anyhow::Result<Vec<ArrayRef>> {
        self.0
            .iter()
            .map(|b| {
                let column = b.column_by_name(name).with_context(|| format!("the query has no column `{name}`"))?;
                arrow::compute::cast(column.as_ref(), to).with_context(|| format!("column `{name}` is not {to}"))
            })
            .collect()
    }

    fn floats(&self, name: &str) -> anyhow::Result<Vec<Option<f64>>> {
        let mut out = Vec::new();
        for a in self.column(name, &DataType::Float64)? {
            out.extend(a.as_primitive_opt::<Float64Type>().context("cast to Float64")?.iter());
        }
        Ok(out)
    }

    fn ints(&self, name: &str) -> anyhow::Result<Vec<Option<i64>>> {
        let mut out = Vec::new();
        for a in self.column(name, &DataType::Int64)? {
            out.extend(a.as_primitive_opt::<Int64Type>().context("cast to Int64")?.iter());
        }
        Ok(out)
    }

    fn strings(&self, name: &str) -> anyhow::Result<Vec<Option<String>>> {
        let mut out = Vec::new();
        for a in self.column(name, &DataType::Utf8)? {
            out.extend(a.as_string_opt::<i32>().context("cast to Utf8")?.iter().map(|s| s.map(str::to_string)));
        }
        Ok(out)
    }

    /// The first row's value of a one-row result (an aggregate), `None` when null or absent.
    fn float(&self, name: &str) -> anyhow::Result<Option<f64>> {
        Ok(self.floats(name)?.first().copied().flatten())
    }

    fn int(&self, name: &str) -> anyhow::Result<Option<i64>> {
        Ok(self.ints(name)?.first().copied().flatten())
    }
}

/// One query the page ran, listed at its end so a reader can run it again.
#[derive(Debug, Clone, Serialize)]
struct Query {
    what: String,
    sql: String,
}

/// Runs the page's queries and keeps them.
struct Sql<'a> {
    ctx: &'a SessionContext,
    /// The run, named in errors.
    run: String,
    log: Vec<Query>,
}

impl<'a> Sql<'a> {
    fn new(ctx: &'a SessionContext, run: &str) -> Self {
        Self { ctx, run: run.to_string(), log: Vec::new() }
    }

    /// Runs `sql`; `what` names it in errors and in the page's list of queries.
    async fn run(&mut self, what: &str, sql: String) -> anyhow::Result<Rows> {
        self.log.push(Query { what: what.to_string(), sql: sql.clone() });
        let failed = format!("computing {what} of {}", self.run);
        let frame = self.ctx.sql(&sql).await.with_context(|| failed.clone())?;
        Ok(Rows(frame.collect().await.with_context(|| failed)?))
    }
}

/// A number on the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Metric {
    /// Stable name, for tools and tests (`accuracy`, `status.ok`).
    key: String,
    /// What the page calls it.
    name: String,
    /// The exact value (Rust's shortest text that parses back to the same f64), empty when
    /// unknown.
    value: String,
    /// As shown.
    shown: String,
}

impl Metric {
    fn new(key: &str, name: &str, value: String, shown: String) -> Self {
        Self { key: key.to_string(), name: name.to_string(), value, shown }
    }

    /// A share, shown as a percentage with two decimals as `demo` prints it.
    fn percent(key: &str, name: &str, v: Option<f64>) -> Self {
        Self::new(key, name, exact(v), percent(v))
    }

    /// A score or threshold, shown with four decimals.
    fn number(key: &str, name: &str, v: Option<f64>) -> Self {
        Self::new(key, name, exact(v), v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}")))
    }

    fn count(key: &str, name: &str, n: Option<i64>) -> Self {
        let text = n.map(|n| n.to_string()).unwrap_or_default();
        Self::new(key, name, text.clone(), if text.is_empty() { "n/a".into() } else { text })
    }
}

/// `v` as text that parses back to the same f64 (Rust's `Display` is the shortest such text).
fn exact(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// `v` as an SQL float literal that parses back to the same f64: `Debug` always has a point
/// or an exponent, so SQL does not read it as an integer. The caller checks it is finite.
fn literal(v: f64) -> String {
    format!("{v:?}")
}

/// A chart on the page: `kind` (`bars` or `lines`) tells tools what it should have drawn.
#[derive(Debug, Clone, Serialize)]
struct Chart {
    kind: &'static str,
    title: String,
    svg: String,
}

/// A key/value pair of the run's metadata.
#[derive(Debug, Clone, Serialize)]
struct Entry {
    key: String,
    value: String,
}

/// One predicted class.
#[derive(Debug, Clone, Serialize)]
struct ClassRow {
    label: String,
    n: i64,
    share: String,
}

/// The class histogram.
#[derive(Debug, Clone, Serialize)]
struct Classes {
    chart: Option<Chart>,
    rows: Vec<ClassRow>,
    /// Classes predicted but left out of the chart.
    hidden: usize,
}

/// A guard event of one batch.
#[derive(Debug, Clone, Serialize)]
struct GuardEvent {
    partition: String,
    batch: String,
    trigger: String,
    action: String,
    detail: String,
}

/// The per-batch section.
#[derive(Debug, Clone, Serialize)]
struct Adaptation {
    /// Where the diagnostics came from, when there are some.
    source: Option<String>,
    /// Why there are none.
    missing: Option<String>,
    summary: Vec<Metric>,
    charts: Vec<Chart>,
    /// Curves without a value in any batch, and why.
    empty: Vec<String>,
    guard_events: Vec<GuardEvent>,
}

/// One cell of the confusion matrix.
#[derive(Debug, Clone, Serialize)]
struct Cell {
    n: i64,
    diagonal: bool,
    /// Background colour, darker for a larger share of the row.
    shade: String,
}

#[derive(Debug, Clone, Serialize)]
struct ConfusionRow {
    actual: String,
    total: i64,
    cells: Vec<Cell>,
}

/// Truth (rows) against prediction (columns), counting in-distribution images with a truth
/// label and a prediction.
#[derive(Debug, Clone, Serialize)]
struct Confusion {
    classes: Vec<String>,
    rows: Vec<ConfusionRow>,
    note: Option<String>,
}

/// One row of the reliability table.
#[derive(Debug, Clone, Serialize)]
struct CalibrationRow {
    bin: String,
    n: i64,
    confidence: String,
    accuracy: String,
}

#[derive(Debug, Clone, Serialize)]
struct Calibration {
    chart: Option<Chart>,
    rows: Vec<CalibrationRow>,
    note: Option<String>,
}

/// The section that needs `--labels`.
#[derive(Debug, Clone, Serialize)]
struct Evaluation {
    csv: String,
    has_ood: bool,
    metrics: Vec<Metric>,
    confusion: Confusion,
    calibration: Calibration,
}

/// Everything the template shows.
#[derive(Debug, Clone, Serialize)]
struct Page {
    source: String,
    version: &'static str,
    files: Vec<String>,
    metadata: Vec<Entry>,
    summary: Vec<Metric>,
    statuses: Vec<Metric>,
    classes: Classes,
    scores: Vec<Chart>,
    scores_notes: Vec<String>,
    adaptation: Adaptation,
    evaluation: Option<Evaluation>,
    has_location: bool,
    thumbnails: Thumbnails,
    queries: Vec<Query>,
}

/// Runs the command.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let bytes = write(&args.result, args.labels.as_deref(), &args.out).await?;
    println!("report of {} -> {} ({} KiB)", args.result.display(), args.out.display(), bytes.div_ceil(1024));
    Ok(())
}

/// Writes the page about the run at `result` (scored against `labels` when given) to `out`,
/// and returns its size in bytes.
pub async fn write(result: &Path, labels: Option<&Path>, out: &Path) -> anyhow::Result<usize> {
    let run = Run::locate(result)?;
    let ctx = session();
    let has_location = register_labels(&ctx, &run).await?;
    let truth = match labels {
        Some(_) if !has_location => {
            return Err(UsageError(format!("--labels matches truth to each row's `location`, and {} has no such column", run.shown)).into())
        }
        Some(csv) => Some((csv.display().to_string(), register_truth(&ctx, csv).await?)),
        None => None,
    };
    let diagnostics = register_diagnostics(&ctx, &run).await?;
    let mut sql = Sql::new(&ctx, &run.shown);
    let page = gather(&mut sql, &run, has_location, truth, diagnostics).await?;
    let html = render(&page)?;
    // Whole or absent, as label's outputs: a killed run leaves no half page.
    write_atomically(out, html.as_bytes()).with_context(|| format!("cannot write the report to {}", out.display()))?;
    Ok(html.len())
}

/// Runs every query and draws every chart.
async fn gather(
    sql: &mut Sql<'_>,
    run: &Run,
    has_location: bool,
    truth: Option<(String, Truth)>,
    diagnostics: Diagnostics,
) -> anyhow::Result<Page> {
    let metadata = run.parts.first().map(|p| run_metadata(p)).transpose()?.unwrap_or_default();
    let (summary, otsu) = summary(sql).await?;
    let statuses = statuses(sql).await?;
    let class_counts = class_counts(sql).await?;
    let classes = classes(&class_counts)?;
    let (adaptation, mean_threshold) = adaptation(sql, diagnostics).await?;
    let mut scores = Vec::new();
    let mut scores_notes = Vec::new();
    match confidence_histogram(sql).await? {
        Ok(chart) => scores.push(chart),
        Err(note) => scores_notes.push(note),
    }
    let mut markers = Vec::new();
    if let Some(t) = mean_threshold {
        markers.push(Marker { x: t, label: format!("mean per-batch threshold {t:.4}") });
    }
    if let Some(t) = otsu {
        markers.push(Marker { x: t, label: format!("Otsu threshold of all scores {t:.4}") });
    }
    match ood_histogram(sql, &markers).await? {
        Ok(chart) => scores.push(chart),
        Err(note) => scores_notes.push(note),
    }
    let evaluation = match truth {
        Some((csv, truth)) => Some(evaluation(sql, csv, truth).await?),
        None => None,
    };
    let thumbnails = if has_location {
        let groups = thumbnail_requests(sql, &class_counts).await?;
        tokio::task::spawn_blocking(move || thumbnails::build(groups)).await.context("the thumbnail task failed")?
    } else {
        Thumbnails::default()
    };
    Ok(Page {
        source: run.shown.clone(),
        version: env!("CARGO_PKG_VERSION"),
        files: run.parts.iter().map(|p| p.display().to_string()).collect(),
        metadata,
        summary,
        statuses,
        classes,
        scores,
        scores_notes,
        adaptation,
        evaluation,
        has_location,
        thumbnails,
        queries: std::mem::take(&mut sql.log),
    })
}

/// The run's settings: the `cliptta.*` key/value metadata of `part` (the file, or a directory's
/// first part: every part of a checkpointed job has the job's fingerprint), without the keys
/// that describe only that part. A file written by a plain `COPY` has none.
fn run_metadata(part: &Path) -> anyhow::Result<Vec<Entry>> {
    let file = std::fs::File::open(part).with_context(|| format!("cannot open {}", part.display()))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("cannot read the Parquet footer of {}", part.display()))?;
    let entries = reader.metadata().file_metadata().key_value_metadata().into_iter().flatten();
    let mut entries: Vec<Entry> = entries
        .filter(|kv| kv.key.starts_with("cliptta.") && !PER_PART_KEYS.contains(&kv.key.as_str()))
        .map(|kv| Entry { key: kv.key.clone(), value: kv.value.clone().unwrap_or_default() })
        .collect();
    // By key: writers keep no order (DataFusion's COPY holds them in a hash map).
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(entries)
}

/// Rows, rows labelled, classes, share flagged OOD (as `evaluate` counts them), and the Otsu
/// threshold of every score (returned too, for the OOD histogram).
async fn summary(sql: &mut Sql<'_>) -> anyhow::Result<(Vec<Metric>, Option<f64>)> {
    let rows = sql
        .run(
            "the summary",
            format!(
                "SELECT count(*) AS total, \
                        CAST(sum(CASE WHEN status = 'ok' THEN 1 ELSE 0 END) AS BIGINT) AS ok, \
                        count(DISTINCT label) AS classes, \
                        avg(CASE WHEN status = 'ok' THEN CASE WHEN is_ood THEN 1.0 ELSE 0.0 END END) AS flagged, \
                        otsu_threshold(ood_score) AS otsu \
                 FROM {LABELLED}"
            ),
        )
        .await?;
    let otsu = rows.float("otsu")?;
    let metrics = vec![
        Metric::count("rows", "rows", rows.int("total")?),
        Metric::count("ok", "rows labelled (status ok)", Some(rows.int("ok")?.unwrap_or(0))),
        Metric::count("classes", "classes predicted", rows.int("classes")?),
        Metric::percent("flagged_ood", "labelled rows flagged OOD", rows.float("flagged")?),
        Metric::number("otsu_threshold", "Otsu threshold of all OOD scores", otsu),
    ];
    Ok((metrics, otsu))
}

/// Rows per status.
async fn statuses(sql: &mut Sql<'_>) -> anyhow::Result<Vec<Metric>> {
    let rows = sql.run("the status counts", format!("SELECT status, count(*) AS n FROM {LABELLED} GROUP BY status ORDER BY status")).await?;
    let names = rows.strings("status")?;
    let counts = rows.ints("n")?;
    Ok(names
        .into_iter()
        .zip(counts)
        .map(|(status, n)| {
            let status = status.unwrap_or_default();
            Metric::count(&format!("status.{status}"), &status, n)
        })
        .collect())
}

/// Images per predicted class, most frequent first (ties by name).
async fn class_counts(sql: &mut Sql<'_>) -> anyhow::Result<Vec<(String, i64)>> {
    let rows = sql
        .run(
            "the class histogram",
            format!("SELECT label, count(*) AS n FROM {LABELLED} WHERE label IS NOT NULL GROUP BY label ORDER BY n DESC, label"),
        )
        .await?;
    Ok(rows.strings("label")?.into_iter().zip(rows.ints("n")?).map(|(l, n)| (l.unwrap_or_default(), n.unwrap_or(0))).collect())
}

/// The class histogram: the first [`MAX_CLASSES`] classes drawn, every class in the table.
fn classes(counts: &[(String, i64)]) -> anyhow::Result<Classes> {
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let rows = counts
        .iter()
        .map(|(label, n)| ClassRow { label: label.clone(), n: *n, share: percent((total > 0).then(|| *n as f64 / total as f64)) })
        .collect();
    let shown = &counts[..counts.len().min(MAX_CLASSES)];
    let chart = if shown.is_empty() {
        None
    } else {
        let labels: Vec<String> = shown.iter().map(|(l, _)| l.clone()).collect();
        let n: Vec<i64> = shown.iter().map(|(_, n)| *n).collect();
        Some(Chart { kind: "bars", title: "Images per predicted class".into(), svg: plots::class_bars(&labels, &n)? })
    };
    Ok(Classes { chart, rows, hidden: counts.len() - shown.len() })
}

/// `(bin, n)` rows of a binning query as [`Bin`]s, bin `k` covering `[lo + k·width, lo + (k+1)·width)`.
fn to_bins(rows: &Rows, lo: f64, width: f64) -> anyhow::Result<Vec<Bin>> {
    Ok(rows
        .ints("bin")?
        .into_iter()
        .zip(rows.ints("n")?)
        .filter_map(|(bin, n)| Some((bin?, n?)))
        .map(|(bin, n)| Bin { lo: lo + bin as f64 * width, hi: lo + (bin + 1) as f64 * width, count: n })
        .collect())
}

/// Confidence in [`CONFIDENCE_BINS`] equal bins on `[0, 1]`.
async fn confidence_histogram(sql: &mut Sql<'_>) -> anyhow::Result<Result<Chart, String>> {
    let last = CONFIDENCE_BINS - 1;
    let rows = sql
        .run(
            "the confidence histogram",
            format!(
                "SELECT bin, count(*) AS n FROM ( \
                   SELECT CASE WHEN c >= 1.0 THEN {last} WHEN c <= 0.0 THEN 0 \
                               ELSE CAST(floor(c * {CONFIDENCE_BINS}.0) AS BIGINT) END AS bin \
                   FROM (SELECT CAST(confidence AS DOUBLE) AS c FROM {LABELLED} \
                         WHERE confidence IS NOT NULL AND NOT isnan(confidence)) v) t \
                 GROUP BY bin ORDER BY bin"
            ),
        )
        .await?;
    let bins = to_bins(&rows, 0.0, 1.0 / CONFIDENCE_BINS as f64)?;
    if bins.is_empty() {
        return Ok(Err("Confidence: no labelled row.".into()));
    }
    let svg = plots::histogram("Confidence of the predicted class", "confidence", &bins, &[])?;
    Ok(Ok(Chart { kind: "bars", title: "Confidence".into(), svg }))
}

/// OOD scores in [`OOD_BINS`] equal bins over their range, with `markers` (thresholds).
async fn ood_histogram(sql: &mut Sql<'_>, markers: &[Marker]) -> anyhow::Result<Result<Chart, String>> {
    let range = sql
        .run(
            "the OOD-score range",
            format!("SELECT min(ood_score) AS lo, max(ood_score) AS hi FROM {LABELLED} WHERE ood_score IS NOT NULL AND NOT isnan(ood_score)"),
        )
        .await?;
    let (Some(lo), Some(hi)) = (range.float("lo")?, range.float("hi")?) else {
        return Ok(Err("OOD score: no labelled row.".into()));
    };
    if !(lo.is_finite() && hi.is_finite()) {
        return Ok(Err(format!("OOD score: not drawn, the scores run from {lo} to {hi}.")));
    }
    // Equal scores make one bin of width 1 around them.
    let (lo, width) = if hi > lo { (lo, (hi - lo) / OOD_BINS as f64) } else { (lo - 0.5, 1.0) };
    let last = OOD_BINS - 1;
    let rows = sql
        .run(
            "the OOD-score histogram",
            format!(
                "SELECT bin, count(*) AS n FROM ( \
                   SELECT CASE WHEN b > {last} THEN {last} WHEN b < 0 THEN 0 ELSE b END AS bin \
                   FROM (SELECT CAST(floor((CAST(ood_score AS DOUBLE) - {}) / {}) AS BIGINT) AS b FROM {LABELLED} \
                         WHERE ood_score IS NOT NULL AND NOT isnan(ood_score)) v) t \
                 GROUP BY bin ORDER BY bin",
                literal(lo),
                literal(width)
            ),
        )
        .await?;
    let bins = to_bins(&rows, lo, width)?;
    let svg = plots::histogram("OOD score (log-MCM; higher is more in-distribution)", "ood_score", &bins, markers)?;
    Ok(Ok(Chart { kind: "bars", title: "OOD score".into(), svg }))
}

/// The per-batch section, and the mean per-batch threshold (for the OOD histogram).
async fn adaptation(sql: &mut Sql<'_>, diagnostics: Diagnostics) -> anyhow::Result<(Adaptation, Option<f64>)> {
    let source = match diagnostics {
        Diagnostics::Found(source) => source,
        Diagnostics::Missing(why) => {
            let none = Adaptation { source: None, missing: Some(why), summary: vec![], charts: vec![], empty: vec![], guard_events: vec![] };
            return Ok((none, None));
        }
    };
    let totals = sql
        .run(
            "the adaptation summary",
            format!(
                "SELECT count(*) AS batches, \
                        CAST(sum(CASE WHEN adapted THEN 1 ELSE 0 END) AS BIGINT) AS adapted, \
                        avg(CASE WHEN NOT isnan(threshold) THEN threshold END) AS mean_threshold, \
                        count(guard) AS guard_events \
                 FROM {BATCHES}"
            ),
        )
        .await?;
    let mean_threshold = totals.float("mean_threshold")?;
    let summary = vec![
        Metric::count("batches", "adaptation batches", totals.int("batches")?),
        Metric::count("adapted_batches", "batches adapted on", Some(totals.int("adapted")?.unwrap_or(0))),
        Metric::number("mean_threshold", "mean per-batch OOD threshold", mean_threshold),
        Metric::count("guard_events", "guard events", totals.int("guard_events")?),
    ];
    let (charts, empty) = curves(sql).await?;
    let guard_events = guard_events(sql).await?;
    Ok((Adaptation { source: Some(source), missing: None, summary, charts, empty, guard_events }, mean_threshold))
}

/// One chart per entry of [`CURVES`], one curve per column and partition, against the batch
/// index; a chart whose columns are null in every batch becomes a line of text.
async fn curves(sql: &mut Sql<'_>) -> anyhow::Result<(Vec<Chart>, Vec<String>)> {
    let columns: BTreeSet<&str> = CURVES.iter().flat_map(|(_, _, c)| c.iter().copied()).collect();
    let list = columns.iter().copied().collect::<Vec<_>>().join(", ");
    let rows = sql
        .run(
            "the per-batch curves",
            // `partition` is an SQL keyword, hence the quotes.
            format!("SELECT \"partition\", \"batch\", {list} FROM {BATCHES} ORDER BY \"partition\", \"batch\""),
        )
        .await?;
    let partition = rows.ints("partition")?;
    let batch = rows.floats("batch")?;
    let partitions: BTreeSet<i64> = partition.iter().flatten().copied().collect();
    let (mut charts, mut empty) = (Vec::new(), Vec::new());
    for (title, y_desc, columns) in CURVES {
        let mut series = Vec::new();
        for column in columns.iter().copied() {
            let values = rows.floats(column)?;
            for &p in &partitions {
                let points: Vec<(f64, f64)> = partition
                    .iter()
                    .zip(&batch)
                    .zip(&values)
                    .filter(|((q, _), _)| **q == Some(p))
                    .filter_map(|((_, x), y)| Some(((*x)?, (*y)?)))
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect();
                if !points.is_empty() {
                    let name = if partitions.len() > 1 { format!("{column} (partition {p})") } else { column.to_string() };
                    series.push(Series { name, points });
                }
            }
        }
        if series.is_empty() {
            // Closed-set runs have no threshold or ID share; zero-shot takes no loss.
            empty.push(format!("{title}: no value in any batch ({}).", columns.join(", ")));
            continue;
        }
        charts.push(Chart { kind: "lines", title: title.to_string(), svg: plots::lines(title, "batch", y_desc, &series)? });
    }
    Ok((charts, empty))
}

/// Batches where the collapse/drift guard fired.
async fn guard_events(sql: &mut Sql<'_>) -> anyhow::Result<Vec<GuardEvent>> {
    let rows = sql
        .run(
            "the guard events",
            format!(
                "SELECT \"partition\", \"batch\", guard, guard_action, guard_detail FROM {BATCHES} \
                 WHERE guard IS NOT NULL ORDER BY \"partition\", \"batch\" LIMIT 100"
            ),
        )
        .await?;
    let text = |v: Option<String>| v.unwrap_or_default();
    let number = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let (p, b) = (rows.ints("partition")?, rows.ints("batch")?);
    let (g, a, d) = (rows.strings("guard")?, rows.strings("guard_action")?, rows.strings("guard_detail")?);
    Ok(p.into_iter()
        .zip(b)
        .zip(g)
        .zip(a)
        .zip(d)
        .map(|((((p, b), g), a), d)| GuardEvent { partition: number(p), batch: number(b), trigger: text(g), action: text(a), detail: text(d) })
        .collect())
}

/// Which joined rows are in-distribution images with a truth label: with `is_ood` in the
/// truth, those it marks false (as `evaluate` scores accuracy), else every matched row.
fn in_distribution(truth: Truth) -> &'static str {
    if truth.has_ood {
        "NOT l.is_ood"
    } else {
        "l.label IS NOT NULL"
    }
}

/// The `--labels` section.
async fn evaluation(sql: &mut Sql<'_>, csv: String, truth: Truth) -> anyhow::Result<Evaluation> {
    // The same expressions as `evaluate`, so the page's accuracy is the one `demo` prints.
    let scores = if truth.has_ood {
        "accuracy(CASE WHEN NOT l.is_ood THEN p.label END, CASE WHEN NOT l.is_ood THEN l.label END) AS accuracy, \
         auroc(p.ood_score, NOT l.is_ood) AS auroc, \
         fpr_at_tpr(p.ood_score, NOT l.is_ood, 0.95) AS fpr95"
    } else {
        "accuracy(p.label, l.label) AS accuracy"
    };
    let rows = sql.run("the scores against the truth", format!("SELECT count(l.label) AS matched, {scores} FROM {JOINED}")).await?;
    let mut metrics = vec![
        Metric::count("matched", "rows with a truth label", rows.int("matched")?),
        Metric::percent("accuracy", "ID accuracy", rows.float("accuracy")?),
    ];
    if truth.has_ood {
        metrics.push(Metric::percent("auroc", "AUROC (OOD score, ID positive)", rows.float("auroc")?));
        metrics.push(Metric::percent("fpr95", "FPR at 95% TPR", rows.float("fpr95")?));
    }
    let (ece, calibration) = calibration(sql, truth).await?;
    metrics.push(ece);
    Ok(Evaluation { csv, has_ood: truth.has_ood, metrics, confusion: confusion(sql, truth).await?, calibration })
}

/// The ECE over [`CALIBRATION_BINS`] bins and the reliability diagram of the same bins. A
/// failed ECE (the aggregate refuses a confidence outside `[0, 1]`) is shown as such rather
/// than failing the page.
async fn calibration(sql: &mut Sql<'_>, truth: Truth) -> anyhow::Result<(Metric, Calibration)> {
    let id = in_distribution(truth);
    let ece_sql = format!("SELECT ece(CASE WHEN {id} THEN p.confidence END, p.label = l.label, {CALIBRATION_BINS}) AS ece FROM {JOINED}");
    let (ece, mut note) = match sql.run("the expected calibration error", ece_sql).await {
        Ok(rows) => (rows.float("ece")?, None),
        Err(e) => (None, Some(format!("ECE not computed: {e:#}"))),
    };
    let metric = Metric::percent("ece", &format!("ECE ({CALIBRATION_BINS} bins)"), ece);
    // The bins of `ece`: right-closed, `(k/bins, (k+1)/bins]` with 0 in the first, their upper
    // edges computed as the aggregate computes them (`k * (1/bins)`, the last exactly 1), so a
    // confidence on an edge falls in the same bin here and in the ECE.
    let step = 1.0 / CALIBRATION_BINS as f64;
    let edges: Vec<f64> = (1..CALIBRATION_BINS).map(|k| k as f64 * step).collect();
    let cases: String = edges.iter().enumerate().map(|(k, e)| format!("WHEN c <= {} THEN {k} ", literal(*e))).collect();
    let rows = sql
        .run(
            "the reliability diagram",
            format!(
                "SELECT bin, count(*) AS n, avg(c) AS confidence, avg(CASE WHEN correct THEN 1.0 ELSE 0.0 END) AS accuracy FROM ( \
                   SELECT c, correct, CASE {cases}ELSE {} END AS bin FROM ( \
                     SELECT CAST(p.confidence AS DOUBLE) AS c, p.label = l.label AS correct FROM {JOINED} \
                     WHERE {id} AND l.label IS NOT NULL AND p.label IS NOT NULL AND p.confidence IS NOT NULL AND NOT isnan(p.confidence)) v) t \
                 GROUP BY bin ORDER BY bin",
                CALIBRATION_BINS - 1
            ),
        )
        .await?;
    let (bin, counts, confidence, accuracy) = (rows.ints("bin")?, rows.ints("n")?, rows.floats("confidence")?, rows.floats("accuracy")?);
    let mut bins = Vec::new();
    let mut table = Vec::new();
    for (((k, n), c), a) in bin.into_iter().zip(counts).zip(confidence).zip(accuracy) {
        let (Some(k), Some(n), Some(c), Some(a)) = (k, n, c, a) else { continue };
        let lo = if k == 0 { 0.0 } else { k as f64 * step };
        let hi = if k as usize + 1 >= CALIBRATION_BINS { 1.0 } else { (k + 1) as f64 * step };
        let open = if k == 0 { '[' } else { '(' };
        table.push(CalibrationRow { bin: format!("{open}{lo:.1}, {hi:.1}]"), n, confidence: format!("{c:.4}"), accuracy: format!("{a:.4}") });
        bins.push(ReliabilityBin { lo, hi, count: n, confidence: c, accuracy: a });
    }
    let chart = if bins.is_empty() {
        if note.is_none() {
            note = Some("No in-distribution image with a truth label was labelled.".into());
        }
        None
    } else {
        Some(Chart { kind: "bars", title: "Reliability".into(), svg: plots::reliability(&bins)? })
    };
    Ok((metric, Calibration { chart, rows: table, note }))
}

/// The confusion matrix of in-distribution images with a truth label and a prediction.
async fn confusion(sql: &mut Sql<'_>, truth: Truth) -> anyhow::Result<Confusion> {
    let id = in_distribution(truth);
    let rows = sql
        .run(
            "the confusion matrix",
            format!(
                "SELECT l.label AS actual, p.label AS predicted, count(*) AS n FROM {JOINED} \
                 WHERE {id} AND p.label IS NOT NULL GROUP BY l.label, p.label ORDER BY l.label, p.label"
            ),
        )
        .await?;
    let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
    for ((a, p), n) in rows.strings("actual")?.into_iter().zip(rows.strings("predicted")?).zip(rows.ints("n")?) {
        if let (Some(a), Some(p), Some(n)) = (a, p, n) {
            counts.insert((a, p), n);
        }
    }
    // One axis for both, so the diagonal is the correct predictions.
    let classes: Vec<String> = counts.keys().flat_map(|(a, p)| [a.clone(), p.clone()]).collect::<BTreeSet<_>>().into_iter().collect();
    if classes.is_empty() {
        return Ok(Confusion { classes, rows: vec![], note: Some("No in-distribution image with a truth label was labelled.".into()) });
    }
    if classes.len() > MAX_CONFUSION_CLASSES {
        let note = format!("{} classes: too many for a table; query it with the SQL below.", classes.len());
        return Ok(Confusion { classes: vec![], rows: vec![], note: Some(note) });
    }
    let rows = classes
        .iter()
        .filter_map(|actual| {
            let cells: Vec<i64> = classes.iter().map(|p| counts.get(&(actual.clone(), p.clone())).copied().unwrap_or(0)).collect();
            let total: i64 = cells.iter().sum();
            // Classes only ever predicted have no row of their own.
            (total > 0).then(|| ConfusionRow {
                actual: actual.clone(),
                total,
                cells: cells
                    .iter()
                    .zip(&classes)
                    .map(|(&n, predicted)| Cell {
                        n,
                        diagonal: predicted == actual,
                        shade: format!("rgba(31, 119, 180, {:.2})", 0.75 * n as f64 / total as f64),
                    })
                    .collect(),
            })
        })
        .collect();
    Ok(Confusion { classes, rows, note: None })
}

/// The thumbnails to show: the [`PER_CLASS`] most confident images of each class of the
/// histogram, and the [`PER_END`] images at each end of the OOD-score ranking.
async fn thumbnail_requests(sql: &mut Sql<'_>, classes: &[(String, i64)]) -> anyhow::Result<Vec<Group>> {
    let per_class = sql
        .run(
            "the thumbnails per class",
            format!(
                "SELECT label, location, confidence FROM ( \
                   SELECT label, location, confidence, \
                          row_number() OVER (PARTITION BY label ORDER BY confidence DESC, location) AS rn \
                   FROM {LABELLED} WHERE label IS NOT NULL) t \
                 WHERE rn <= {PER_CLASS} ORDER BY label, rn"
            ),
        )
        .await?;
    let mut by_class: BTreeMap<String, Vec<Request>> = BTreeMap::new();
    let (labels, locations, confidences) = (per_class.strings("label")?, per_class.strings("location")?, per_class.floats("confidence")?);
    for ((label, location), confidence) in labels.into_iter().zip(locations).zip(confidences) {
        let (Some(label), Some(location)) = (label, location) else { continue };
        let caption = confidence.map(|c| format!("confidence {c:.3}")).unwrap_or_default();
        by_class.entry(label).or_default().push(Request { location, caption });
    }
    // In the histogram's order (most frequent first), for the classes it draws.
    let mut groups: Vec<Group> = classes
        .iter()
        .take(MAX_CLASSES)
        .filter_map(|(label, _)| by_class.remove(label).map(|requests| Group { title: format!("predicted {label}"), requests }))
        .collect();
    for (title, order) in [("Most OOD-like (lowest ood_score)", "ASC"), ("Least OOD-like (highest ood_score)", "DESC")] {
        let rows = sql
            .run(
                &format!("the thumbnails: {title}"),
                format!(
                    "SELECT location, label, ood_score FROM {LABELLED} \
                     WHERE ood_score IS NOT NULL AND NOT isnan(ood_score) \
                     ORDER BY ood_score {order}, location LIMIT {PER_END}"
                ),
            )
            .await?;
        let (locations, labels, scores) = (rows.strings("location")?, rows.strings("label")?, rows.floats("ood_score")?);
        let requests = locations
            .into_iter()
            .zip(labels)
            .zip(scores)
            .filter_map(|((location, label), score)| {
                let score = score.map(|s| format!("{s:.3}")).unwrap_or_default();
                Some(Request { location: location?, caption: format!("{} · {score}", label.unwrap_or_default()) })
            })
            .collect();
        groups.push(Group { title: title.to_string(), requests });
    }
    Ok(groups)
}

/// The page's template, compiled in so an installed binary needs no other file.
const TEMPLATE: &str = include_str!("report.html.j2");

/// The page as HTML. The template's name ends in `.html.j2`, so minijinja escapes every value
/// as HTML (class names and paths come from the data); the SVGs and `data:` URIs, made here,
/// are marked safe in the template.
fn render(page: &Page) -> anyhow::Result<String> {
    let mut env = minijinja::Environment::new();
    // A name the template uses that the page does not have is a bug to hear about, not an
    // empty string.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("report.html.j2", TEMPLATE).context("the report template does not parse")?;
    let template = env.get_template("report.html.j2").context("the report template is missing")?;
    template.render(page).context("cannot render the report")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_has_its_diagnostics_beside_it_and_a_directory_inside() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.parquet");
        std::fs::write(&file, b"").unwrap();
        let run = Run::locate(&file).unwrap();
        assert_eq!((run.parts, run.batches), (vec![file.clone()], dir.path().join("run.batches.parquet")));

        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let missing = Run::locate(&out).unwrap_err();
        assert!(missing.downcast_ref::<UsageError>().is_some() && missing.to_string().contains("no committed part"), "{missing}");
        for name in ["part-p000-00001.parquet", "part-p000-00000.parquet", "batches.parquet", "state-p000-00001.safetensors"] {
            std::fs::write(out.join(name), b"").unwrap();
        }
        let run = Run::locate(&out).unwrap();
        assert_eq!(run.parts, [out.join("part-p000-00000.parquet"), out.join("part-p000-00001.parquet")]);
        assert_eq!(run.batches, out.join(BATCHES_FILE));

        let nowhere = Run::locate(&dir.path().join("nowhere.parquet")).unwrap_err();
        assert!(nowhere.downcast_ref::<UsageError>().is_some(), "{nowhere}");
    }

    #[test]
    fn a_manifest_names_the_parts_that_count() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = serde_json::json!({
            "version": cliptta::job::MANIFEST_VERSION, "partition": 0, "fingerprint": {}, "complete": false,
            "commits": [{"seq": 0, "part": "part-p000-00000.parquet", "rows": 4, "position": 4, "adapt_batches": 1, "state": null}],
        });
        std::fs::write(dir.path().join("manifest-p000.json"), manifest.to_string()).unwrap();
        // A part a killed run wrote but never committed.
        std::fs::write(dir.path().join("part-p000-00001.parquet"), b"").unwrap();
        assert_eq!(committed_parts(dir.path()).unwrap(), [dir.path().join("part-p000-00000.parquet")]);
    }

    #[test]
    fn numbers_round_trip_through_their_text() {
        for v in [0.1 + 0.2, 2.0 / 3.0, 1e-7, -3.5, 1e16, 0.0] {
            assert_eq!(exact(Some(v)).parse::<f64>().unwrap(), v);
            let sql = literal(v);
            assert!(sql.contains('.') || sql.contains('e'), "{sql} would be read as an integer");
            assert_eq!(sql.parse::<f64>().unwrap(), v);
        }
        assert_eq!(exact(None), "");
        assert_eq!(Metric::percent("a", "a", Some(0.5)).shown, "50.00%");
    }

    #[test]
    fn the_template_renders_an_empty_page() {
        let page = Page {
            source: "x.parquet".into(),
            version: "0",
            files: vec!["x.parquet".into()],
            metadata: vec![],
            summary: vec![Metric::count("rows", "rows", Some(0))],
            statuses: vec![],
            classes: Classes { chart: None, rows: vec![], hidden: 0 },
            scores: vec![],
            scores_notes: vec!["Confidence: no labelled row.".into()],
            adaptation: Adaptation { source: None, missing: Some("x.batches.parquet not found".into()), summary: vec![], charts: vec![], empty: vec![], guard_events: vec![] },
            evaluation: None,
            has_location: true,
            thumbnails: Thumbnails::default(),
            queries: vec![Query { what: "the summary".into(), sql: "SELECT '<b>'".into() }],
        };
        let html = render(&page).unwrap();
        assert!(html.contains("data-metric=\"rows\" data-value=\"0\">0<"), "{html}");
        assert!(html.contains("x.batches.parquet not found"));
        assert!(html.contains("&lt;b&gt;") && !html.contains("<b>'"), "values are escaped");
        assert!(!html.contains("<script"));
    }
}
