//! `cliptta report`: the page's numbers are the SQL aggregates a user would run over the same
//! Parquet, its charts draw something, its thumbnails are real images, it loads nothing when
//! opened, and a real browser shows it without complaint, every chart and thumbnail visible. The runs
//! label images of the demo lake (Fashion-MNIST, with MNIST digits as OOD) with the tiny model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Context;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use base64::Engine as _;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};

use crate::support::tiny_model;

/// The demo lake's in-distribution classes (the default model's).
const CLASSES: &str = "t-shirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle boot";
/// Images taken from the demo lake: the first 24 are 21 Fashion-MNIST images and 3 digits.
const IMAGES: usize = 24;
/// Thumbnails at each end of the OOD-score ranking.
const PER_END: usize = 8;

fn cliptta(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cliptta")).args(args).output().expect("run cliptta")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temporary path")
}

/// A lake of the first [`IMAGES`] demo images plus one file that does not decode, and the
/// truth for the images as `path,label,is_ood` (outside the lake, so it is not listed).
fn demo_lake(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo");
    let lake = dir.join("lake");
    std::fs::create_dir_all(lake.join("images"))?;
    let all = std::fs::read_to_string(demo.join("labels.csv"))?;
    let mut truth = vec!["path,label,is_ood".to_string()];
    for line in all.lines().skip(1).take(IMAGES) {
        let cells: Vec<&str> = line.split(',').collect();
        let (image, label, is_ood) = (cells[0], cells[1], cells[3]);
        std::fs::copy(demo.join(image), lake.join(image))?;
        truth.push(format!("{image},{label},{is_ood}"));
    }
    std::fs::write(lake.join("images/broken.png"), b"not a png")?;
    let csv = dir.join("truth.csv");
    std::fs::write(&csv, truth.join("\n") + "\n")?;
    Ok((lake, csv))
}

/// Labels `lake` into `out` (a file or a directory) with open-set CLIPTTA, so there are OOD
/// decisions and per-batch thresholds.
fn label(lake: &Path, out: &Path) {
    let model = tiny_model();
    let run = cliptta(&[
        "label", path(lake), "--out", path(out), "--classes", CLASSES, "--model", &model, "--adapt-batch-size", "8", "--steps", "1",
        "--open-set", "--quiet",
    ]);
    assert!(run.status.success(), "{}\n{}", text(&run.stdout), text(&run.stderr));
}

/// Runs `report` and returns the page.
fn report(result: &Path, labels: Option<&Path>, out: &Path) -> String {
    let mut args = vec!["report", path(result), "--out", path(out)];
    if let Some(csv) = labels {
        args.extend(["--labels", path(csv)]);
    }
    let run = cliptta(&args);
    assert!(run.status.success(), "{}\n{}", text(&run.stdout), text(&run.stderr));
    assert!(text(&run.stdout).contains(&format!("-> {}", out.display())), "{}", text(&run.stdout));
    std::fs::read_to_string(out).expect("the report")
}

/// Every `data-metric="KEY" data-value="VALUE">SHOWN<` of the page, as KEY -> (VALUE, SHOWN).
pub fn metrics(html: &str) -> HashMap<String, (String, String)> {
    let mut out = HashMap::new();
    for rest in html.split("data-metric=\"").skip(1) {
        let Some((key, rest)) = rest.split_once('"') else { continue };
        let Some((value, rest)) = rest.strip_prefix(" data-value=\"").and_then(|r| r.split_once('"')) else { continue };
        let shown = rest.strip_prefix('>').and_then(|r| r.split_once('<')).map_or("", |(s, _)| s);
        out.insert(key.to_string(), (value.to_string(), shown.to_string()));
    }
    out
}

/// `key`'s exact value on the page, parsed.
fn value(metrics: &HashMap<String, (String, String)>, key: &str) -> f64 {
    let (value, _) = metrics.get(key).unwrap_or_else(|| panic!("`{key}` is not on the page: {metrics:?}"));
    value.parse().unwrap_or_else(|e| panic!("`{key}` = `{value}`: {e}"))
}

/// Each chart of the page: its `data-chart` kind and its SVG.
fn charts(html: &str) -> Vec<(String, String)> {
    html.split("<figure class=\"chart\" data-chart=\"")
        .skip(1)
        .map(|rest| {
            let kind = rest.split('"').next().unwrap_or_default().to_string();
            let svg = rest.split_once("<svg").and_then(|(_, s)| s.split_once("</svg>")).map(|(s, _)| format!("<svg{s}</svg>")).unwrap_or_default();
            (kind, svg)
        })
        .collect()
}

/// Rectangles of positive size after the background one, and marked points.
fn drawn(svg: &str) -> (usize, usize) {
    let positive = |r: &&str| {
        let attr = |name: &str| r.split(&format!(" {name}=\"")).nth(1).and_then(|v| v.split('"').next()).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        attr("width") > 0.0 && attr("height") > 0.0
    };
    (svg.split("<rect").skip(2).filter(positive).count(), svg.matches("<circle").count())
}

/// Every chart drew its data: bars for `bars`, points for `lines`; and every SVG is a chart.
fn check_charts(html: &str) -> (usize, usize) {
    let charts = charts(html);
    assert_eq!(charts.len(), html.matches("<svg").count(), "an SVG outside a chart figure");
    let (mut bars, mut lines) = (0, 0);
    for (kind, svg) in &charts {
        let (rects, circles) = drawn(svg);
        match kind.as_str() {
            "bars" => {
                assert!(rects >= 1, "a bar chart without bars: {svg}");
                bars += 1;
            }
            "lines" => {
                assert!(circles >= 1, "a curve without points: {svg}");
                lines += 1;
            }
            other => panic!("unknown chart kind `{other}`"),
        }
    }
    (bars, lines)
}

/// The decoded PNG of every thumbnail.
fn thumbnails(html: &str) -> Vec<image::DynamicImage> {
    html.split("src=\"data:image/png;base64,")
        .skip(1)
        .map(|rest| {
            let b64 = rest.split('"').next().unwrap_or_default();
            let png = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
            image::load_from_memory(&png).expect("a PNG")
        })
        .collect()
}

/// Thumbnails are at most 64 pixels a side and not one flat colour.
fn check_thumbnails(html: &str, at_least: usize) {
    let images = thumbnails(html);
    assert!(images.len() >= at_least, "{} thumbnails, expected at least {at_least}", images.len());
    for img in images {
        assert!(img.width() <= 64 && img.height() <= 64, "{}x{}", img.width(), img.height());
        let rgba = img.to_rgba8();
        let first = *rgba.get_pixel(0, 0);
        assert!(rgba.pixels().any(|p| *p != first), "a blank thumbnail");
    }
}

/// The page needs nothing beyond itself: no script, and every `src`/`href` is inline or an
/// anchor.
fn check_self_contained(html: &str) {
    assert!(!html.contains("<script"), "the page has JavaScript");
    assert!(!html.contains("url("), "the page loads a CSS resource");
    for attr in ["src=\"", "href=\""] {
        for target in html.split(attr).skip(1).map(|s| s.split('"').next().unwrap_or_default()) {
            assert!(target.starts_with("data:") || target.starts_with('#'), "{attr}{target}: the page would fetch it");
        }
    }
}

/// A session with the evaluation aggregates and nothing of the report's.
fn sql_session() -> SessionContext {
    let ctx = SessionContext::new();
    cliptta_udfs::register_all(&ctx);
    ctx
}

async fn query(ctx: &SessionContext, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
    ctx.sql(sql).await?.collect().await.with_context(|| sql.to_string())
}

/// The one row of an aggregate query, each column as f64 (`None` for null).
async fn one_row(ctx: &SessionContext, sql: &str) -> anyhow::Result<HashMap<String, Option<f64>>> {
    let batches = query(ctx, sql).await?;
    let batch = batches.iter().find(|b| b.num_rows() > 0).context("no row")?;
    let mut out = HashMap::new();
    for (i, field) in batch.schema().fields().iter().enumerate() {
        let column = arrow::compute::cast(batch.column(i), &DataType::Float64)?;
        let column = column.as_primitive::<Float64Type>();
        out.insert(field.name().clone(), column.is_valid(0).then(|| column.value(0)));
    }
    Ok(out)
}

/// Rows per status of `table`.
async fn status_counts(ctx: &SessionContext, table: &str) -> anyhow::Result<Vec<(String, i64)>> {
    let batches = query(ctx, &format!("SELECT status, count(*) AS n FROM {table} GROUP BY status ORDER BY status")).await?;
    let mut out = Vec::new();
    for b in batches {
        let status = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let n = arrow::compute::cast(b.column(1), &DataType::Int64)?;
        let (status, n) = (status.as_string::<i32>(), n.as_primitive::<Int64Type>());
        out.extend((0..b.num_rows()).map(|i| (status.value(i).to_string(), n.value(i))));
    }
    Ok(out)
}

/// The page's status counts and row total are the SQL counts of `table`.
async fn check_statuses(ctx: &SessionContext, table: &str, page: &HashMap<String, (String, String)>) -> anyhow::Result<()> {
    let statuses = status_counts(ctx, table).await?;
    assert_eq!(statuses.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["decode_error", "ok"], "{statuses:?}");
    for (status, n) in &statuses {
        assert_eq!(value(page, &format!("status.{status}")), *n as f64, "{status}");
    }
    assert_eq!(page.keys().filter(|k| k.starts_with("status.")).count(), statuses.len(), "{page:?}");
    assert_eq!(value(page, "rows"), (IMAGES + 1) as f64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_shows_the_sql_aggregates_of_its_parquet() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (lake, truth) = demo_lake(dir.path())?;
    let out = dir.path().join("run.parquet");
    label(&lake, &out);
    let html = report(&out, Some(&truth), &dir.path().join("report.html"));
    let page = metrics(&html);

    let ctx = sql_session();
    ctx.register_parquet("p", path(&out), ParquetReadOptions::default()).await?;
    ctx.register_csv("l", path(&truth), CsvReadOptions::new().has_header(true)).await?;
    ctx.register_parquet("b", path(&dir.path().join("run.batches.parquet")), ParquetReadOptions::default()).await?;
    let want = one_row(
        &ctx,
        "SELECT accuracy(CASE WHEN NOT l.is_ood THEN p.label END, CASE WHEN NOT l.is_ood THEN l.label END) AS accuracy, \
                auroc(p.ood_score, NOT l.is_ood) AS auroc, \
                fpr_at_tpr(p.ood_score, NOT l.is_ood, 0.95) AS fpr95, \
                ece(CASE WHEN NOT l.is_ood THEN p.confidence END, p.label = l.label, 10) AS ece, \
                count(l.label) AS matched \
         FROM p LEFT JOIN l ON p.location LIKE concat('%/', l.path)",
    )
    .await?;
    // Accuracy is a ratio of counts and AUROC and FPR95 come from the sorted scores: the same
    // in any plan, so the page has them to the last bit, and shows them as `demo` prints them.
    for key in ["accuracy", "auroc", "fpr95"] {
        let expected = want[key].unwrap_or_else(|| panic!("{key} is null"));
        assert_eq!(value(&page, key), expected, "{key}");
        assert_eq!(page[key].1, format!("{:.2}%", 100.0 * expected), "{key}");
    }
    assert_eq!(value(&page, "matched"), IMAGES as f64);
    // ECE and the mean threshold add floats, in an order SQL leaves to the plan (partitions
    // merge as they finish): equal up to rounding.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
    let ece = want["ece"].expect("ece");
    assert!(close(value(&page, "ece"), ece), "ece {} vs {ece}", value(&page, "ece"));
    let threshold = one_row(&ctx, "SELECT avg(CASE WHEN NOT isnan(threshold) THEN threshold END) AS t FROM b").await?["t"]
        .expect("an open-set run has per-batch thresholds");
    assert!(close(value(&page, "mean_threshold"), threshold), "mean threshold {} vs {threshold}", value(&page, "mean_threshold"));
    let flagged = one_row(&ctx, "SELECT avg(CASE WHEN status = 'ok' THEN CASE WHEN is_ood THEN 1.0 ELSE 0.0 END END) AS f FROM p").await?["f"];
    assert!(close(value(&page, "flagged_ood"), flagged.expect("flagged")));
    check_statuses(&ctx, "p", &page).await?;

    assert!(html.contains("cliptta.method"), "the run's metadata is shown");
    assert!(html.contains("Confusion matrix") && html.contains("class=\"diagonal\""));
    let (bars, lines) = check_charts(&html);
    // Classes, confidence, OOD score, reliability; loss, threshold, ID share, distance, classes.
    assert!(bars >= 4 && lines >= 3, "{bars} bar charts, {lines} curves");
    // Some class's images, and both ends of the OOD ranking (24 labelled images).
    check_thumbnails(&html, 1 + 2 * PER_END);
    check_self_contained(&html);
    check_in_browser(&dir.path().join("report.html"), &html)?;
    Ok(())
}

/// Chromium shows the page without a console message, an error or a fetch, and every chart
/// and thumbnail of `html` decoded and is not blank in the screenshot.
fn check_in_browser(page: &Path, html: &str) -> anyhow::Result<()> {
    let Some(browser) = crate::browser::chromium()? else { return Ok(()) };
    let shown = crate::browser::render(&browser, page)?;
    assert!(shown.probe.problems.is_empty(), "the browser reported: {:#?}", shown.probe.problems);
    assert_eq!(shown.probe.svgs, html.matches("<svg").count(), "SVGs in the page's DOM");
    let count = |kind: &str| shown.probe.elements.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count("chart"), charts(html).len(), "charts laid out");
    assert_eq!(count("image"), thumbnails(html).len(), "thumbnails laid out");
    let undecoded: Vec<_> = shown.probe.elements.iter().filter(|e| !e.decoded).collect();
    assert!(undecoded.is_empty(), "images the browser could not decode: {undecoded:?}");
    let blank = shown.blank_elements();
    assert!(blank.is_empty(), "blank in the screenshot: {blank:?}");
    Ok(())
}

/// The browser check is not vacuous: on a page with a console call, an image that does not
/// load, an image that does not decode and an empty chart, it reports each, and it passes a
/// drawn chart and a real thumbnail.
#[test]
fn the_browser_check_sees_what_is_wrong_with_a_page() -> anyhow::Result<()> {
    let Some(browser) = crate::browser::chromium()? else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo");
    let first = std::fs::read_to_string(demo.join("labels.csv"))?.lines().nth(1).and_then(|l| l.split(',').next()).map(str::to_string).context("an image")?;
    let png = base64::engine::general_purpose::STANDARD.encode(std::fs::read(demo.join(first))?);
    let page = dir.path().join("broken.html");
    std::fs::write(
        &page,
        format!(
            "<!doctype html><html><head><title>t</title></head><body>\
             <figure class=\"chart\"><svg width=\"200\" height=\"100\"></svg></figure>\
             <figure class=\"chart\"><svg width=\"200\" height=\"100\"><rect x=\"10\" y=\"10\" width=\"150\" height=\"60\" fill=\"steelblue\"/></svg></figure>\
             <img src=\"missing.png\" width=\"64\" height=\"64\">\
             <img src=\"data:image/png;base64,AAAA\" width=\"64\" height=\"64\">\
             <img src=\"data:image/png;base64,{png}\" width=\"64\" height=\"64\">\
             <script>console.error(\"something broke\")</script></body></html>"
        ),
    )?;
    let shown = crate::browser::render(&browser, &page)?;
    let problems = shown.probe.problems.join("\n");
    assert!(problems.contains("console.error: something broke"), "{problems}");
    assert!(problems.contains("missing.png"), "{problems}");
    let decoded: Vec<bool> = shown.probe.elements.iter().filter(|e| e.kind == "image").map(|e| e.decoded).collect();
    assert_eq!(decoded, [false, false, true]);
    // Of the boxes only the empty chart is blank: the drawn chart and the thumbnail are not, and
    // the browser draws a broken-image icon for each image it could not show (which `decoded`
    // reports).
    let blank: Vec<(&str, u32)> = shown.blank_elements().iter().map(|e| (e.kind.as_str(), e.y as u32)).collect();
    assert_eq!(blank.iter().map(|(k, _)| *k).collect::<Vec<_>>(), ["chart"], "{blank:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_run_and_a_run_without_diagnostics_or_labels() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (lake, _) = demo_lake(dir.path())?;
    let out = dir.path().join("job");
    label(&lake, &out);
    let html = report(&out, None, &dir.path().join("job.html"));
    let page = metrics(&html);

    // The SQL reads the part files as a user would, by their glob, not through the manifests.
    let mut parts: Vec<String> = std::fs::read_dir(&out)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("part-") && n.ends_with(".parquet")))
        .map(|p| path(&p).to_string())
        .collect();
    parts.sort();
    assert!(!parts.is_empty());
    let ctx = sql_session();
    let frame = ctx.read_parquet(parts, ParquetReadOptions::default()).await?;
    ctx.register_table("p", frame.into_view())?;
    check_statuses(&ctx, "p", &page).await?;
    assert!(html.contains(&format!("From <code>{}", out.join("batches.parquet").display().to_string().replace('/', "&#x2f;"))), "diagnostics from batches.parquet");
    assert!(!html.contains("id=\"evaluation\""), "no truth section without --labels");
    check_charts(&html);
    check_self_contained(&html);

    // A killed run has no batches.parquet yet; its commits still hold the diagnostics.
    std::fs::rename(out.join("batches.parquet"), dir.path().join("batches.parquet"))?;
    let html = report(&out, None, &dir.path().join("killed.html"));
    assert!(html.contains("cliptta_batches"), "diagnostics read back from the commits");
    assert!(check_charts(&html).1 >= 2, "per-batch curves from the commits");

    // One part file on its own: labels with no diagnostics beside them.
    let single = dir.path().join("single");
    std::fs::create_dir(&single)?;
    let file = single.join("labels.parquet");
    std::fs::copy(first_part(&out)?, &file)?;
    let html = report(&file, None, &dir.path().join("single.html"));
    assert!(html.contains("No per-batch diagnostics"), "the missing diagnostics are named");
    assert!(html.contains("cliptta.method"), "a part file carries the job's fingerprint");
    check_charts(&html);
    check_self_contained(&html);

    // Usage errors: no such run, and a file that is not labels (the diagnostics).
    let html_out = dir.path().join("x.html");
    let missing = cliptta(&["report", path(&dir.path().join("nothing.parquet")), "--out", path(&html_out)]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing.stderr));
    let wrong = cliptta(&["report", path(&dir.path().join("batches.parquet")), "--out", path(&html_out)]);
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong.stderr));
    assert!(text(&wrong.stderr).contains("is not a cliptta labels file"), "{}", text(&wrong.stderr));
    assert!(!html_out.exists(), "a failed report writes nothing");
    Ok(())
}

/// The first part file of an output directory.
fn first_part(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("part-")))
        .collect();
    parts.sort();
    parts.into_iter().next().context("no part file")
}
