//! Checkpointed jobs: a `cliptta label` killed (SIGKILL) at several points and run again ends
//! with exactly the rows of a run that was never stopped; `COPY ... checkpoint_dir` replays its
//! commits; a checkpoint of another job is refused naming what differs; a `.parquet` output
//! never appears half-written.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;

use crate::support::{session, tiny_model, write_lake};

/// 100 images of the demo lake plus the test lake's good, corrupt, empty and oversized files,
/// so commits fall inside chunks that hold failed rows.
fn job_lake(dir: &Path) -> PathBuf {
    let lake = dir.join("lake");
    write_lake(&lake);
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/lake/images");
    for i in 0..100 {
        let name = format!("{i:04}.png");
        std::fs::copy(demo.join(&name), lake.join(&name)).unwrap();
    }
    lake
}

fn label(lake: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cliptta"));
    cmd.args([
        "label",
        lake.to_str().unwrap(),
        "--out",
        &format!("{}/", out.display()),
        "--classes",
        "cat,dog,bird",
        "--model",
        &tiny_model(),
        "--adapt-batch-size",
        "6",
        "--checkpoint-every",
        "2",
        "--max-pixels",
        "10000",
        "--open-set",
        "--quiet",
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn commits(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("manifest-p000.json")).map_or(0, |m| m.matches("\"seq\"").count())
}

/// Every row of a job directory's parts, in commit order, and their count.
fn rows_of(dir: &Path) -> (usize, String) {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("part-")))
        .collect();
    parts.sort();
    let mut batches: Vec<RecordBatch> = Vec::new();
    for part in parts {
        let file = std::fs::File::open(&part).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        batches.extend(reader.map(|b| b.unwrap()));
    }
    (batches.iter().map(RecordBatch::num_rows).sum(), pretty_format_batches(&batches).unwrap().to_string())
}

/// Diagnostics rows as one batch, and as text without the columns that may differ between
/// runs: `seconds`, and the guard's (its window restarts on a resume).
fn comparable_diagnostics(batches: &[RecordBatch]) -> (RecordBatch, String) {
    let all = arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap();
    let keep: Vec<usize> = (0..all.num_columns()).filter(|&i| !matches!(all.schema().field(i).name().as_str(), "seconds" | "guard" | "guard_action" | "guard_detail")).collect();
    let text = pretty_format_batches(&[all.project(&keep).unwrap()]).unwrap().to_string();
    (all, text)
}

/// A diagnostics file's rows as [`comparable_diagnostics`] text, with a check that batches are
/// numbered 0, 1, ... per partition.
fn diagnostics_of(path: &Path) -> (String, usize) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let (all, text) = comparable_diagnostics(&batches);
    let partition = all.column_by_name("partition").unwrap().as_any().downcast_ref::<arrow::array::UInt32Array>().unwrap().clone();
    let batch = all.column_by_name("batch").unwrap().as_any().downcast_ref::<arrow::array::UInt64Array>().unwrap().clone();
    let mut next: std::collections::BTreeMap<u32, u64> = Default::default();
    for (p, b) in partition.values().iter().zip(batch.values()) {
        let want = next.entry(*p).or_default();
        assert_eq!(*b, *want, "partition {p}: batch {b} where {want} was next");
        *want += 1;
    }
    (text, all.num_rows())
}

fn wait(child: Child) -> std::process::Output {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn a_killed_job_resumes_to_the_same_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = job_lake(tmp.path());
    let straight = tmp.path().join("straight");
    wait(label(&lake, &straight).spawn().unwrap());
    let expected = rows_of(&straight);
    assert_eq!(expected.0, 111, "every input row once:\n{}", expected.1);

    // Kill points: before any commit, then after 1, 3 and 6 commits (wherever the process is
    // when the test sees the manifest reach that count).
    let resumed = tmp.path().join("resumed");
    let mut kills = 0;
    for target in [0, 1, 3, 6] {
        let mut child = label(&lake, &resumed).spawn().unwrap();
        let started = Instant::now();
        while commits(&resumed) < target && started.elapsed() < Duration::from_secs(60) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(kills >= 3, "the job finished before it could be killed");
    let last = wait(label(&lake, &resumed).spawn().unwrap());
    let stdout = String::from_utf8_lossy(&last.stdout);
    assert!(stdout.contains("rows resumed"), "{stdout}");
    assert_eq!(rows_of(&resumed), expected, "a resumed job must give the rows of an uninterrupted one");
    // ... and the same diagnostics: one row per adaptation batch, numbered without gaps or
    // repeats, with the uninterrupted run's numbers (time aside; the guard restarts its window
    // on resume, so its columns are left out too).
    let (straight_batches, straight_count) = diagnostics_of(&straight.join("batches.parquet"));
    let (resumed_batches, resumed_count) = diagnostics_of(&resumed.join("batches.parquet"));
    assert_eq!(straight_count, 18, "one row per batch of 6 of the 107 readable images:\n{straight_batches}");
    assert_eq!(resumed_batches, straight_batches);
    assert_eq!(resumed_count, straight_count);
    // Only the last state is kept, and nothing half-written is left.
    let names: Vec<String> = std::fs::read_dir(&resumed).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("state-") && n.ends_with(".safetensors")).count(), 1, "{names:?}");
    assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");

    // A finished job run again reads everything back and commits nothing new.
    let again = wait(label(&lake, &resumed).spawn().unwrap());
    assert!(String::from_utf8_lossy(&again.stdout).contains("checkpoint: 111 rows resumed, 0 commits in this run"), "{}", String::from_utf8_lossy(&again.stdout));
    assert_eq!(rows_of(&resumed), expected);

    // Another job in the same directory is refused, naming what differs.
    let mut other = label(&lake, &resumed);
    other.args(["--seed", "7"]);
    let out = other.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was made by a different job: method_config.seed: `42` in the checkpoint, `7` now; seed: `42` in the checkpoint, `7` now"), "{stderr}");

    // The same job over a lake that changed under the checkpoint is refused: one more image
    // reshuffles the listing, so the committed rows are no longer the first ones.
    std::fs::copy(lake.join("0000.png"), lake.join("0100.png")).unwrap();
    let out = label(&lake, &resumed).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the first 111 input rows are not the ones it committed (was the lake modified?)"), "{stderr}");
    assert_eq!(rows_of(&resumed), expected, "a refused run changes nothing");
    // A lake that shrank below the checkpoint's position is refused too.
    for i in 0..20 {
        std::fs::remove_file(lake.join(format!("{i:04}.png"))).unwrap();
    }
    let out = label(&lake, &resumed).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the input ended 19 rows before the checkpoint's position (was the lake modified?)"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_killed_parquet_output_is_never_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = job_lake(tmp.path());
    let out = tmp.path().join("labels.parquet");
    let cmd = label(&lake, &out);
    // The same command with a file: `--out labels.parquet` (the helper adds a slash).
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut cmd = Command::new(cmd.get_program());
    cmd.args(args.iter().map(|a| if a.ends_with("labels.parquet/") { a.trim_end_matches('/').to_string() } else { a.clone() }));
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let partials = || -> Vec<String> {
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.contains(".partial-")).collect()
    };
    // Killed while it writes: once its temporary file exists.
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    while partials().is_empty() && started.elapsed() < Duration::from_secs(60) && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(partials().len(), 1, "the run was not killed while writing");
    assert!(!out.exists(), "a killed run left {}", out.display());
    // What a killed run leaves under its temporary name is removed by the next run (here also a
    // stand-in left by a process that has exited).
    let gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    let _ = wait(gone);
    std::fs::write(tmp.path().join(format!("labels.parquet.partial-{gone_pid}")), b"PAR1").unwrap();
    let done = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(out.is_file());
    assert!(partials().is_empty(), "{:?}", partials());
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_with_a_checkpoint_dir_replays_its_commits() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let lake = job_lake(tmp.path());
    let checkpoint = tmp.path().join("checkpoint");
    let ctx = session();
    let run = |out: &str| {
        format!(
            "COPY (SELECT * FROM cliptta('{}', 'classes', 'cat,dog,bird', 'model', '{}', 'adapt_batch_size', 6, 'max_pixels', 10000, \
             'checkpoint_dir', '{}', 'checkpoint_every', 3)) TO '{out}' STORED AS PARQUET",
            lake.display(),
            tiny_model(),
            checkpoint.display()
        )
    };
    let first = tmp.path().join("first.parquet").display().to_string();
    let second = tmp.path().join("second.parquet").display().to_string();
    ctx.sql(&run(&first)).await?.collect().await?;
    let analyzed = ctx.sql(&format!("EXPLAIN ANALYZE {}", run(&second))).await?.collect().await?;
    let analyzed = pretty_format_batches(&analyzed)?.to_string();
    assert!(analyzed.contains("rows_resumed=111") && analyzed.contains("adapt_batches=0"), "{analyzed}");
    let read = |p: &str| {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(p).unwrap()).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        (batches.iter().map(RecordBatch::num_rows).sum::<usize>(), pretty_format_batches(&batches).unwrap().to_string())
    };
    let (rows, first_rows) = read(&first);
    assert_eq!(rows, 111);
    assert_eq!(read(&second).1, first_rows);
    Ok(())
}

/// A partitioned, checkpointed scan stopped early (LIMIT) and run again: `cliptta_batches`
/// returns one row per adaptation batch of each partition, none repeated or missing, the same
/// as an uninterrupted scan's; EXPLAIN ANALYZE summarises the batches.
#[tokio::test(flavor = "multi_thread")]
async fn partitioned_resumed_scans_keep_one_diagnostics_row_per_batch() -> anyhow::Result<()> {
    use arrow::array::Array;
    let tmp = tempfile::tempdir()?;
    let lake = job_lake(tmp.path());
    let ctx = session();
    let scan = |dir: &Path| {
        format!(
            "cliptta('{}', 'classes', 'cat,dog,bird', 'model', '{}', 'adapt_batch_size', 6, 'max_pixels', 10000, 'partitions', 2, \
             'reset', 'per_partition', 'checkpoint_dir', '{}', 'checkpoint_every', 1)",
            lake.display(),
            tiny_model(),
            dir.display()
        )
    };
    let batches_of = |dir: &Path| format!("SELECT * FROM cliptta_batches('{}') ORDER BY partition, batch", dir.display());
    let straight = tmp.path().join("straight");
    let analyzed = ctx.sql(&format!("EXPLAIN ANALYZE SELECT count(*) FROM {}", scan(&straight))).await?.collect().await?;
    let analyzed = pretty_format_batches(&analyzed)?.to_string();
    let want = ctx.sql(&batches_of(&straight)).await?.collect().await?;
    let total: usize = want.iter().map(RecordBatch::num_rows).sum();
    assert!(analyzed.contains(&format!("adaptation=batches={total} loss=")), "{analyzed}");

    let resumed = tmp.path().join("resumed");
    ctx.sql(&format!("SELECT location FROM {} LIMIT 20", scan(&resumed))).await?.collect().await?;
    let early: usize = ctx.sql(&batches_of(&resumed)).await?.collect().await?.iter().map(RecordBatch::num_rows).sum();
    assert!(early > 0 && early < total, "the stopped scan committed {early} of {total} batches");
    ctx.sql(&format!("SELECT count(*) FROM {}", scan(&resumed))).await?.collect().await?;
    let got = ctx.sql(&batches_of(&resumed)).await?.collect().await?;
    let (want_all, want_text) = comparable_diagnostics(&want);
    let rows = want_all.num_rows();
    assert!(rows >= 18, "107 readable images in batches of 6 over two partitions: {rows}");
    assert_eq!(comparable_diagnostics(&got).1, want_text);
    // Both partitions ran batches numbered from 0 without gaps.
    let counts = ctx
        .sql(&format!("SELECT partition, count(*) AS n, min(batch) AS lo, max(batch) AS hi FROM cliptta_batches('{}') GROUP BY partition ORDER BY partition", resumed.display()))
        .await?
        .collect()
        .await?;
    let counts = arrow::compute::concat_batches(&counts[0].schema(), &counts)?;
    assert_eq!(counts.num_rows(), 2, "{}", pretty_format_batches(&[counts.clone()])?);
    let n = counts.column(1).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
    let hi = counts.column(3).as_any().downcast_ref::<arrow::array::UInt64Array>().unwrap();
    for i in 0..2 {
        assert_eq!(n.value(i) as u64, hi.value(i) + 1);
    }
    // A directory that is not a checkpoint is a planning error naming it.
    let err = ctx.sql(&format!("SELECT * FROM cliptta_batches('{}')", lake.display())).await.unwrap_err().to_string();
    assert!(err.contains("is not a checkpoint directory"), "{err}");
    Ok(())
}
