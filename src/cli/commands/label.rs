//! `cliptta label`: label every image under a location and write Parquet, with a progress bar,
//! a summary, and the run recorded in the file's key/value metadata.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{Array, AsArray, RecordBatch};
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use cliptta::job::{write_batches, BATCHES_FILE};
use cliptta::model::{load_cached, LoadOptions};
use cliptta::source::{list_objects, ImageLocation};
use cliptta::RowStatus;
use cliptta::sql::{model_dir, resolve_model_store, resolve_store, ClipTtaExec, ClipTtaMetrics, ClipTtaOptions, ClipTtaProvider, OptionValue, ProviderSource};

use super::sql::session;
use crate::cli::args::LabelArgs;
use crate::cli::UsageError;

/// Counts for the final summary.
#[derive(Debug, Default)]
struct Summary {
    rows: usize,
    by_status: BTreeMap<RowStatus, usize>,
    by_label: BTreeMap<String, usize>,
    ood: usize,
}

impl Summary {
    fn add(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        self.rows += batch.num_rows();
        let column = |name: &str| batch.schema().index_of(name).ok().map(|i| batch.column(i).clone());
        if let Some(status) = column("status") {
            for s in status.as_string::<i32>().iter().flatten() {
                *self.by_status.entry(s.parse::<RowStatus>()?).or_default() += 1;
            }
        }
        if let Some(label) = column("label") {
            for l in label.as_string::<i32>().iter().flatten() {
                *self.by_label.entry(l.to_string()).or_default() += 1;
            }
        }
        if let Some(ood) = column("is_ood") {
            let ood = ood.as_boolean();
            self.ood += (0..ood.len()).filter(|&i| ood.is_valid(i) && ood.value(i)).count();
        }
        Ok(())
    }

    fn print(&self, out: &std::path::Path) {
        let ok = self.by_status.get(&RowStatus::Ok).copied().unwrap_or(0);
        let join = |m: Vec<(String, usize)>| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
        println!("labelled {} images -> {}", self.rows, out.display());
        println!("status: {}", join(self.by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect()));
        println!("labels: {}", join(self.by_label.iter().map(|(k, v)| (k.clone(), *v)).collect()));
        let fraction = if ok == 0 { 0.0 } else { 100.0 * self.ood as f64 / ok as f64 };
        println!("ood: {} of {ok} ({fraction:.1}%)", self.ood);
        if let Some(kib) = peak_memory_kib() {
            println!("peak memory: {} MiB", kib / 1024);
        }
    }
}

/// The process's peak resident memory (`VmHWM` in /proc/self/status), where the system has it.
fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()
}

/// Progress read from the plan's [`ClipTtaExec`] metrics (rows done and failed, summed over
/// partitions); falls back to the rows written when the plan has no such exec.
struct Progress(Option<Arc<dyn ExecutionPlan>>);

impl Progress {
    fn find(plan: &Arc<dyn ExecutionPlan>) -> Self {
        Self(ClipTtaExec::find(plan))
    }

    fn update(&self, bar: &ProgressBar, rows_written: usize) {
        let Some(exec) = self.0.as_ref().and_then(|p| p.downcast_ref::<ClipTtaExec>()) else {
            bar.set_position(rows_written as u64);
            return;
        };
        let metrics = exec.live_metrics();
        let done: usize = metrics.iter().map(ClipTtaMetrics::rows_done).sum();
        let failed: usize = metrics.iter().map(ClipTtaMetrics::rows_failed_total).sum();
        bar.set_position(done.max(rows_written) as u64);
        bar.set_message(format!("({failed} failed)"));
    }

    /// The scan's per-batch diagnostics and their one-line summary (`None` without a cliptta scan).
    fn diagnostics(&self) -> anyhow::Result<Option<(RecordBatch, String)>> {
        let Some(exec) = self.0.as_ref().and_then(|p| p.downcast_ref::<ClipTtaExec>()) else {
            return Ok(None);
        };
        let summary = ClipTtaMetrics::adaptation_summary(&exec.live_metrics());
        Ok(Some((exec.diagnostics()?, summary)))
    }

    /// Rows read back from a checkpoint, commits made and seconds spent committing, over partitions.
    fn checkpoint_counts(&self) -> CheckpointCounts {
        let Some(exec) = self.0.as_ref().and_then(|p| p.downcast_ref::<ClipTtaExec>()) else {
            return CheckpointCounts::default();
        };
        let metrics = exec.live_metrics();
        let seconds = metrics.iter().map(|m| m.commit_time.value() as f64).sum::<f64>() / 1e9;
        CheckpointCounts {
            resumed: metrics.iter().map(|m| m.rows_resumed.value()).sum(),
            refetched: metrics.iter().map(|m| m.rows_refetched.value()).sum(),
            commits: metrics.iter().map(|m| m.commits.value()).sum(),
            commit_seconds: seconds,
        }
    }
}

/// What a checkpointed run did, over partitions.
#[derive(Debug, Default)]
struct CheckpointCounts {
    resumed: usize,
    refetched: usize,
    commits: usize,
    commit_seconds: f64,
}

/// Where `--out` sends the labels.
enum Output {
    /// One Parquet file, renamed into place when complete.
    File(std::path::PathBuf),
    /// A checkpoint directory: its part files are the labels.
    Directory(std::path::PathBuf),
}

impl Output {
    fn of(out: &std::path::Path) -> Self {
        let text = out.to_string_lossy();
        let is_file = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) && !text.ends_with('/') && !out.is_dir();
        if is_file {
            Self::File(out.to_path_buf())
        } else {
            Self::Directory(out.to_path_buf())
        }
    }
}

/// The run as recorded in its Parquet's key/value metadata: where the images came from, the
/// checkpoint and its content hash, and every setting, each under a `cliptta.` key.
pub fn run_metadata(location: &str, options: &ClipTtaOptions, model_hash: &str) -> Vec<(String, String)> {
    let mut metadata = vec![
        ("cliptta.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("cliptta.location".to_string(), location.to_string()),
        ("cliptta.model".to_string(), options.model.to_string()),
        ("cliptta.model_hash".to_string(), model_hash.to_string()),
        ("cliptta.resume".to_string(), options.resume.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
    ];
    metadata.extend(options.describe().into_iter().map(|(k, v)| (format!("cliptta.{k}"), v)));
    metadata
}

/// Runs the command.
pub async fn run(args: LabelArgs) -> anyhow::Result<()> {
    let mut pairs = args.options.pairs.clone();
    pairs.extend(args.store_options.iter().map(|(k, v)| (k.clone(), OptionValue::Text(v.clone()))));
    let output = Output::of(&args.out);
    if let Output::Directory(dir) = &output {
        if !pairs.iter().any(|(k, _)| k == "checkpoint_dir") {
            pairs.push(("checkpoint_dir".to_string(), OptionValue::Text(dir.display().to_string())));
        }
    }
    let options = ClipTtaOptions::parse(&pairs).map_err(|errors| UsageError(errors.join("\n")))?;
    let location = ImageLocation::parse(&args.location)
        .and_then(|l| l.check_exists().map(|()| l))
        .map_err(|e| UsageError(e.to_string()))?
        .with_extensions(options.extensions.clone());

    let ctx = session();
    let store = resolve_store(&ctx.runtime_env(), &location, &options.store_options)?;
    let listing = list_objects(&store, &location, options.order()).await?;
    let (total, skipped) = (listing.objects.len(), listing.skipped.len());
    let empty = (total == 0).then(|| match skipped {
        0 => format!("{} lists no object", location.original()),
        n => format!("{} lists no image ({n} other objects skipped by extension or glob)", location.original()),
    });
    if let Some(message) = &empty {
        if args.fail_on_empty {
            anyhow::bail!("{message} (--fail-on-empty)");
        }
        eprintln!("warning: {message}");
    }
    let model_store = resolve_model_store(&ctx.runtime_env(), &options)?;
    let model_dir = model_dir(&options, model_store.as_ref()).await?;
    let load = LoadOptions { device: options.device, ..LoadOptions::default() };
    let model = tokio::task::spawn_blocking(move || load_cached(&model_dir, &load)).await??;

    let metadata = run_metadata(location.original(), &options, model.content_hash());

    let provider = ClipTtaProvider::try_new(ProviderSource::Lake(location.clone()), options)?;
    let df = ctx.read_table(Arc::new(provider))?;
    let plan = df.create_physical_plan().await?;
    let schema = plan.schema();
    let progress = Progress::find(&plan);
    let mut stream = execute_stream(plan, ctx.task_ctx())?;

    // A file is written under a temporary name, so a killed run never leaves a truncated file
    // where the result should be.
    let mut writer = match &output {
        Output::File(path) => {
            let props = WriterProperties::builder()
                .set_key_value_metadata(Some(metadata.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect()))
                .build();
            remove_stale_partials(path);
            let tmp = partial_path(path);
            let file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            Some((ArrowWriter::try_new(file, schema, Some(props))?, tmp, path.clone()))
        }
        Output::Directory(_) => None,
    };

    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(total as u64) };
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} images {per_sec} eta {eta} {msg}")?);
    let mut summary = Summary::default();
    // The bar follows the exec's metrics (images fetched and predicted or failed), which move
    // within an adaptation batch, rather than the output batches, which arrive one per batch.
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            batch = stream.next() => match batch {
                Some(batch) => {
                    let batch = batch?;
                    if let Some((w, _, _)) = writer.as_mut() {
                        w.write(&batch)?;
                    }
                    summary.add(&batch)?;
                }
                None => break,
            },
            _ = tick.tick() => {}
        }
        progress.update(&bar, summary.rows);
    }
    progress.update(&bar, summary.rows);
    if let Some((w, tmp, path)) = writer {
        w.close()?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("cannot flush {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    }
    bar.finish_and_clear();
    let counts = progress.checkpoint_counts();
    let diagnostics = match progress.diagnostics()? {
        Some((rows, line)) => {
            let path = batches_path(&output);
            write_batches(&path, &[rows]).with_context(|| format!("cannot write the diagnostics to {}", path.display()))?;
            Some((path, line))
        }
        None => None,
    };
    summary.print(&args.out);
    if let Some((path, line)) = diagnostics {
        println!("adaptation: {line} -> {}", path.display());
    }
    if skipped > 0 {
        let shown: Vec<String> = listing.skipped.iter().take(3).map(|m| m.location.to_string()).collect();
        let more = if skipped > shown.len() { ", ..." } else { "" };
        let by = if location.has_glob() { "not matched by the glob".to_string() } else { format!("extension not one of `{}`", location.extensions()) };
        println!("skipped: {skipped} objects ({by}): {}{more}", shown.join(", "));
    }
    if let Some(message) = &empty {
        println!("warning: {message}");
    }
    if matches!(output, Output::Directory(_)) || counts.commits > 0 || counts.resumed > 0 {
        let CheckpointCounts { resumed, refetched, commits, commit_seconds } = counts;
        let refetched = if refetched > 0 { format!(" ({refetched} fetch_error rows fetched again)") } else { String::new() };
        println!("checkpoint: {resumed} rows resumed{refetched}, {commits} commits in this run ({commit_seconds:.2} s committing)");
    }
    Ok(())
}

/// Where the per-batch diagnostics go: `batches.parquet` in an output directory, or
/// `<name>.batches.parquet` beside an output file.
fn batches_path(output: &Output) -> std::path::PathBuf {
    match output {
        Output::Directory(dir) => dir.join(BATCHES_FILE),
        Output::File(path) => {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            path.with_file_name(format!("{stem}.{BATCHES_FILE}"))
        }
    }
}

/// Where a `.parquet` output is written until it is complete.
fn partial_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".partial-{}", std::process::id()));
    path.with_file_name(name)
}

/// Removes what killed runs left of `path`: `<name>.partial-<pid>` files of processes that are
/// gone. Only where `/proc` tells which processes live, so a concurrent run's file is kept.
fn remove_stale_partials(path: &std::path::Path) {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Some(name) = path.file_name() else {
        return;
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let prefix = format!("{}.partial-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!("removed {}, left by a run that was killed", entry.path().display()),
                Err(e) => tracing::warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}
