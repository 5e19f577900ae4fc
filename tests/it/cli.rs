//! The `cliptta` binary: `label` writes Parquet with the run in its metadata and resumes from a
//! saved state; `sql` prints and COPYs; exit codes separate usage errors (2) from failures (1).

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{tiny_model, write_lake};

fn cliptta(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cliptta")).args(args).output().expect("run cliptta")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn label(lake: &Path, out: &Path, extra: &[&str]) -> Output {
    let model = tiny_model();
    let mut args = vec![
        "label",
        lake.to_str().unwrap_or_default(),
        "--out",
        out.to_str().unwrap_or_default(),
        "--classes",
        "cat,dog,bird",
        "--model",
        &model,
        "--adapt-batch-size",
        "4",
        "--steps",
        "1",
        "--max-pixels",
        "10000",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    cliptta(&args)
}

fn state_batches(state: &Path) -> u64 {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(state.with_extension("json")).expect("state json")).expect("json");
    json["stats"]["batches"].as_u64().expect("batches")
}

#[test]
fn label_writes_parquet_with_run_metadata_and_resumes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lake = dir.path().join("lake");
    write_lake(&lake);
    let out = dir.path().join("labels.parquet");
    let state = dir.path().join("state.safetensors");
    let run = label(&lake, &out, &["--save-state", state.to_str().unwrap_or_default()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let stdout = text(&run.stdout);
    assert!(stdout.contains("labelled 11 images"), "{stdout}");
    assert!(stdout.contains("status: ok 6, decode_error 4, too_large 1"), "{stdout}");
    assert!(stdout.contains("ood: 0 of 6"), "{stdout}");
    let skipped = format!("skipped: 2 objects (extension not one of `jpg,jpeg,png,webp,gif,bmp,tif,tiff`): {0}/README, {0}/labels.csv", lake.display().to_string().trim_start_matches('/'));
    assert!(stdout.contains(&skipped), "{stdout}");

    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&out)?)?;
    let kv: std::collections::HashMap<String, String> = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| kv.iter().map(|e| (e.key.clone(), e.value.clone().unwrap_or_default())).collect())
        .unwrap_or_default();
    assert_eq!(kv.get("cliptta.classes").map(String::as_str), Some("cat,dog,bird"));
    assert_eq!(kv.get("cliptta.method").map(String::as_str), Some("cliptta"));
    assert_eq!(kv.get("cliptta.seed").map(String::as_str), Some("42"));
    assert_eq!(kv.get("cliptta.order").map(String::as_str), Some("shuffle"));
    assert_eq!(kv.get("cliptta.model_hash").map(String::len), Some(64));
    assert!(kv.get("cliptta.method_config").is_some_and(|m| m.contains("\"steps\":1")), "{kv:?}");
    let rows: usize = reader.build()?.map(|b| b.map(|b| b.num_rows())).sum::<Result<usize, _>>()?;
    assert_eq!(rows, 11);
    assert_eq!(state_batches(&state), 2);

    let resumed = dir.path().join("resumed.safetensors");
    let out2 = dir.path().join("labels2.parquet");
    let run = label(&lake, &out2, &["--resume", state.to_str().unwrap_or_default(), "--save-state", resumed.to_str().unwrap_or_default()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(state_batches(&resumed), 4, "the resumed run continues the saved adapter");
    Ok(())
}

#[test]
fn exit_codes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("x.parquet");
    let bad_option = label(dir.path(), &out, &["--lr", "fast"]);
    assert_eq!(bad_option.status.code(), Some(2), "{}", text(&bad_option.stderr));
    assert!(text(&bad_option.stderr).contains("option `lr`: `fast` is not a positive number"), "{}", text(&bad_option.stderr));
    let missing_out = cliptta(&["label", "/tmp"]);
    assert_eq!(missing_out.status.code(), Some(2));
    // A path that does not exist is a usage error naming it, not an empty result.
    let nowhere = dir.path().join("nonexistent");
    let missing = label(&nowhere, &out, &[]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing.stderr));
    let want = format!("error: invalid location `{0}`: {0} does not exist", nowhere.display());
    assert!(text(&missing.stderr).contains(&want), "{}", text(&missing.stderr));
    let sql = cliptta(&["sql", &format!("SELECT count(*) FROM cliptta('{}', 'classes', 'a,b', 'model', '{}')", nowhere.display(), tiny_model())]);
    assert_eq!(sql.status.code(), Some(1), "{}", text(&sql.stderr));
    assert!(text(&sql.stderr).contains(&format!("cliptta: invalid location `{0}`: {0} does not exist", nowhere.display())), "{}", text(&sql.stderr));
    // An existing place that lists nothing warns (an empty prefix can be legitimate), or fails
    // with --fail-on-empty.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty)?;
    let warned = label(&empty, &out, &[]);
    assert!(warned.status.success(), "{}", text(&warned.stderr));
    let warning = format!("warning: {} lists no object", empty.display());
    assert!(text(&warned.stderr).contains(&warning) && text(&warned.stdout).contains(&warning), "{}{}", text(&warned.stdout), text(&warned.stderr));
    let refused = label(&empty, &dir.path().join("y.parquet"), &["--fail-on-empty"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains(&format!("{} lists no object (--fail-on-empty)", empty.display())), "{}", text(&refused.stderr));
    let failure = cliptta(&["sql", "SELECT * FROM no_such_table"]);
    assert_eq!(failure.status.code(), Some(1), "{}", text(&failure.stderr));
    assert!(text(&failure.stderr).contains("no_such_table"), "{}", text(&failure.stderr));
    Ok(())
}

#[test]
fn sql_prints_and_copies() -> anyhow::Result<()> {
    let csv = cliptta(&["sql", "SELECT 1 AS x, 'a' AS y", "--format", "csv"]);
    assert!(csv.status.success(), "{}", text(&csv.stderr));
    assert_eq!(text(&csv.stdout), "x,y\n1,a\n");
    let json = cliptta(&["sql", "SELECT 1 AS x", "--format", "json"]);
    assert_eq!(text(&json.stdout).trim(), "[{\"x\":1}]");

    let dir = tempfile::tempdir()?;
    let lake = dir.path().join("lake");
    write_lake(&lake);
    let out = dir.path().join("copy.parquet");
    let script = dir.path().join("run.sql");
    std::fs::write(
        &script,
        format!(
            "-- label a lake\nCOPY (SELECT location, label, status FROM cliptta('{}', 'classes', 'cat,dog', 'model', '{}', 'steps', 1)) TO '{}' STORED AS PARQUET;\nSELECT status, count(*) AS n FROM '{}' GROUP BY status ORDER BY status;",
            lake.display(),
            tiny_model(),
            out.display(),
            out.display()
        ),
    )?;
    let run = cliptta(&["sql", "-f", script.to_str().unwrap_or_default(), "--format", "csv"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(text(&run.stdout).ends_with("status,n\ndecode_error,4\nok,7\n"), "{}", text(&run.stdout));
    Ok(())
}

/// The binary carries its default model and demo lake: a copy of it, run from an empty
/// directory with an empty cache and no `$CLIPTTA_MODEL`, completes the demo on the embedded
/// files and reads nothing from the source tree.
#[test]
fn an_installed_binary_runs_the_demo_from_anywhere() -> anyhow::Result<()> {
    let install = tempfile::tempdir()?;
    let binary = install.path().join("cliptta");
    std::fs::copy(env!("CARGO_BIN_EXE_cliptta"), &binary)?;
    let cwd = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let run = Command::new(&binary)
        .args(["demo", "--methods", "zero_shot"])
        .current_dir(cwd.path())
        .env("CLIPTTA_CACHE_DIR", cache.path())
        .env_remove("CLIPTTA_MODEL")
        .output()?;
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", text(&run.stderr));
    let cache = cache.path().display().to_string();
    assert!(stdout.contains(&format!("lake {cache}/lakes/shift-demo-")), "{stdout}");
    assert!(stdout.contains(&format!("model {cache}/models/default-")), "{stdout}");
    assert!(!stdout.contains(env!("CARGO_MANIFEST_DIR")), "the demo used the source tree:\n{stdout}");
    let row = stdout.lines().find(|l| l.starts_with("| zero_shot |")).unwrap_or_else(|| panic!("no zero_shot row:\n{stdout}"));
    assert!(row.contains("| 1250/1250 |"), "{row}");
    assert!(cwd.path().join("target/demo/zero_shot.parquet").is_file());
    assert!(cwd.path().join("target/demo/zero_shot.batches.parquet").is_file());
    // The report the demo writes shows the numbers its table printed.
    assert!(stdout.contains("report: target/demo/zero_shot.html"), "{stdout}");
    let page = crate::report::metrics(&std::fs::read_to_string(cwd.path().join("target/demo/zero_shot.html"))?);
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    for (column, key) in [(4, "accuracy"), (5, "auroc"), (6, "fpr95"), (7, "flagged_ood")] {
        assert_eq!(page[key].1, cells[column], "{key}: the report vs the table row {row}");
    }
    Ok(())
}

/// `compare` runs every method as its own `label` and scores each output in SQL: the accuracy
/// it prints is the share of labelled rows that match the truth, read back from its Parquet.
#[test]
fn compare_prints_each_method_scored_against_the_truth() -> anyhow::Result<()> {
    use arrow::array::{Array, AsArray};
    let dir = tempfile::tempdir()?;
    let lake = dir.path().join("lake");
    write_lake(&lake);
    let truth = dir.path().join("truth.csv");
    let names = ["a.png", "b.png", "c.jpg", "d.jpg", "e.png", "f.jpg"];
    let wanted = ["cat", "dog", "bird", "cat", "dog", "bird"];
    let csv: String = std::iter::once("path,label".to_string()).chain(names.iter().zip(wanted).map(|(n, l)| format!("{n},{l}"))).collect::<Vec<_>>().join("\n");
    std::fs::write(&truth, csv)?;
    let out = dir.path().join("cmp");
    let model = tiny_model();
    let run = cliptta(&[
        "compare", lake.to_str().unwrap_or_default(), "--methods", "zero_shot,tda,unient", "--labels", truth.to_str().unwrap_or_default(),
        "--out", out.to_str().unwrap_or_default(), "--classes", "cat,dog,bird", "--model", &model, "--adapt-batch-size", "4", "--steps", "1",
        "--max-pixels", "10000", "--open-set", "--set", "pos_alpha=1.5",
    ]);
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", text(&run.stderr));
    for method in ["zero_shot", "tda", "unient"] {
        let row = stdout.lines().find(|l| l.starts_with(&format!("| {method} |"))).unwrap_or_else(|| panic!("no {method} row:\n{stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[10], "6/11", "{row}");
        assert!(cells[4].parse::<u64>().is_ok_and(|mib| mib > 0), "peak memory: {row}");
        let file = std::fs::File::open(out.join(format!("{method}.parquet")))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
        let (mut right, mut labelled) = (0, 0);
        for batch in reader {
            let batch = batch?;
            let location = batch.column_by_name("location").unwrap().as_string::<i32>().clone();
            let label = batch.column_by_name("label").unwrap().as_string::<i32>().clone();
            for i in 0..batch.num_rows() {
                if label.is_null(i) {
                    continue;
                }
                let name = location.value(i).rsplit('/').next().unwrap_or_default();
                let Some(k) = names.iter().position(|n| *n == name) else { continue };
                labelled += 1;
                right += usize::from(label.value(i) == wanted[k]);
            }
        }
        assert_eq!(labelled, 6);
        assert_eq!(cells[5], format!("{:.2}%", 100.0 * right as f64 / 6.0), "{row}");
    }
    Ok(())
}
