//! The collapse and drift guard in SQL: a TENT stream driven to collapse (learning rate 0.05
//! on the default model, where the official 1e-3 is stable) triggers it, and each action does
//! what it says; healthy streams (CLIPTTA and TENT at their official settings) never trigger it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};

use crate::support::session;

/// The first 192 images of the demo lake: 12 adaptation batches of 16.
fn lake(dir: &Path) -> PathBuf {
    let lake = dir.join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/lake/images");
    for i in 0..192 {
        let name = format!("{i:04}.png");
        std::fs::copy(demo.join(&name), lake.join(&name)).unwrap();
    }
    lake
}

fn scan(lake: &Path, checkpoint: &Path, settings: &str) -> String {
    format!(
        "cliptta('{}', classes => 't-shirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle boot', \
         adapt_batch_size => 16, guard_window => 3, checkpoint_dir => '{}', checkpoint_every => 1, {settings})",
        lake.display(),
        checkpoint.display()
    )
}

/// The labels predicted, and the guard's (trigger, action) per diagnostics row that has one.
async fn run(lake: &Path, dir: &Path, settings: &str) -> anyhow::Result<(Vec<String>, Vec<(String, String)>)> {
    let ctx = session();
    let rows = ctx.sql(&format!("SELECT label FROM {}", scan(lake, dir, settings))).await?.collect().await?;
    let labels: Vec<String> = rows.iter().flat_map(|b| b.column(0).as_string::<i32>().iter().flatten().map(str::to_string).collect::<Vec<_>>()).collect();
    let batches = ctx.sql(&format!("SELECT guard, guard_action FROM cliptta_batches('{}') ORDER BY batch", dir.display())).await?.collect().await?;
    let mut events = Vec::new();
    for b in &batches {
        let (g, a) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
        for i in (0..b.num_rows()).filter(|&i| g.is_valid(i)) {
            events.push((g.value(i).to_string(), a.value(i).to_string()));
        }
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 12, "one diagnostics row per batch");
    Ok((labels, events))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guard_catches_a_collapsing_stream_and_acts() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let lake = lake(tmp.path());
    let collapsing = "method => 'tent', lr => 0.05";

    // warn (the default): the job finishes, the collapse is recorded.
    let (warned, events) = run(&lake, &tmp.path().join("warn"), collapsing).await?;
    assert_eq!(warned.len(), 192);
    assert!(!events.is_empty() && events.iter().all(|e| e == &("class_collapse".to_string(), "warn".to_string())), "{events:?}");
    let warned_classes: BTreeSet<&String> = warned.iter().collect();

    // reset: the adapter returns to the checkpoint, so more classes survive than under warn.
    let (reset, events) = run(&lake, &tmp.path().join("reset"), &format!("{collapsing}, guard => 'reset'")).await?;
    assert_eq!(reset.len(), 192);
    assert!(!events.is_empty() && events.iter().all(|e| e.1 == "reset"), "{events:?}");
    let reset_classes: BTreeSet<&String> = reset.iter().collect();
    assert!(reset_classes.len() > warned_classes.len(), "reset {reset_classes:?} vs warn {warned_classes:?}");

    // stop: the query fails naming the trigger.
    let ctx = session();
    let sql = format!("SELECT label FROM {}", scan(&lake, &tmp.path().join("stop"), &format!("{collapsing}, guard => 'stop'")));
    let err = ctx.sql(&sql).await?.collect().await.unwrap_err().to_string();
    assert!(err.contains("the adaptation guard stopped the job after batch") && err.contains("class_collapse"), "{err}");

    // off: nothing is recorded.
    let (_, events) = run(&lake, &tmp.path().join("off"), &format!("{collapsing}, guard => 'off'")).await?;
    assert!(events.is_empty(), "{events:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn healthy_streams_never_trigger_the_guard() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let lake = lake(tmp.path());
    for (name, settings) in [("cliptta", "method => 'cliptta'"), ("cliptta-open", "method => 'cliptta', open_set => true"), ("tent", "method => 'tent'")] {
        let (labels, events) = run(&lake, &tmp.path().join(name), settings).await?;
        assert_eq!(labels.len(), 192);
        assert!(events.is_empty(), "{name}: {events:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn guard_options_are_checked() -> anyhow::Result<()> {
    let ctx = session();
    for (option, needle) in [
        ("guard => 'later'", "unknown guard action `later`; expected off, warn, reset or stop"),
        ("guard_window => 0", "option `guard_window`"),
        ("guard_min_class_ratio => 2", "`guard_min_class_ratio` = 2 is not in (0, 1]"),
        ("guard_max_distance => -1", "`guard_max_distance` = -1 is not a positive number"),
    ] {
        let sql = format!("SELECT * FROM cliptta('/tmp', classes => 'a,b', {option})");
        let err = ctx.sql(&sql).await.unwrap_err().to_string();
        assert!(err.contains(needle), "{option}: {err}");
    }
    Ok(())
}
