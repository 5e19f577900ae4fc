//! One conformance suite over every source kind: a local directory, the memory store, an S3
//! API server (s3s-fs) and a WebDAV server (`rclone serve webdav`, object_store's HTTP store)
//! on loopback. Each holds the same lake, and [`conformance`] checks the same things on each:
//! listing with globs, every object exactly once (also across partitions), bad objects as
//! per-row statuses, a single object by URL, and `COPY ... TO` Parquet read back.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use datafusion::prelude::SessionContext;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use crate::support::{image_bytes, lake_files, s3_options, session, start_s3, tiny_model, WebDav};

/// A lake in one store, as a `cliptta(...)` call sees it.
struct Source {
    /// The lake's location as passed to `cliptta` (no trailing slash).
    lake: String,
    /// How the `location` column spells the lake's objects (the lake as a URL).
    url: String,
    /// Store options appended to every call (`, 'key', 'value'...`).
    options: String,
    ctx: SessionContext,
}

/// The test lake plus one image in a subdirectory (for recursive listing and `**`).
fn objects() -> Vec<(String, Vec<u8>, &'static str)> {
    let mut files: Vec<_> = lake_files().into_iter().map(|(n, b, s)| (n.to_string(), b, s)).collect();
    files.push(("sub/g.png".to_string(), image_bytes(30, 30, 21, image::ImageFormat::Png), "ok"));
    files
}

fn write_objects(dir: &Path) -> anyhow::Result<()> {
    for (name, bytes, _) in objects() {
        let path = dir.join(&name);
        std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
        std::fs::write(path, bytes)?;
    }
    Ok(())
}

fn call(source: &Source, location: &str, extra: &str) -> String {
    format!(
        "cliptta('{location}', 'classes', 'cat,dog,bird', 'model', '{}', 'method', 'zero_shot', 'adapt_batch_size', 4, 'max_pixels', 10000{}{extra})",
        tiny_model(),
        source.options
    )
}

/// (location, status) of every row, sorted.
async fn rows(source: &Source, location: &str, extra: &str) -> anyhow::Result<Vec<(String, String)>> {
    let sql = format!("SELECT location, status FROM {}", call(source, location, extra));
    let batches = source.ctx.sql(&sql).await?.collect().await?;
    Ok(sorted_rows(&batches))
}

fn sorted_rows(batches: &[RecordBatch]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for batch in batches {
        let (Ok(loc), Ok(status)) = (batch.schema().index_of("location"), batch.schema().index_of("status")) else {
            panic!("no location/status columns in {:?}", batch.schema());
        };
        let (loc, status) = (batch.column(loc).as_string::<i32>(), batch.column(status).as_string::<i32>());
        out.extend((0..batch.num_rows()).map(|i| (loc.value(i).to_string(), status.value(i).to_string())));
    }
    out.sort();
    out
}

/// What `rows` should return for the objects whose names pass `keep`.
fn expected(source: &Source, keep: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    let mut want: Vec<_> =
        objects().into_iter().filter(|(n, _, _)| keep(n)).map(|(n, _, s)| (format!("{}/{n}", source.url), s.to_string())).collect();
    want.sort();
    want
}

/// The suite every source passes.
async fn conformance(source: Source) -> anyhow::Result<()> {
    let name = source.url.clone();
    // Every object exactly once with its status (bad ones included), in one and in three
    // partitions.
    let all = expected(&source, |_| true);
    assert_eq!(rows(&source, &source.lake, "").await?, all, "{name}: whole lake");
    assert_eq!(rows(&source, &format!("{}/", source.lake), ", 'partitions', 3").await?, all, "{name}: three partitions");

    // Globs: `*` stays in one directory, `**` crosses them.
    let top_png = expected(&source, |n| n.ends_with(".png") && !n.contains('/'));
    assert_eq!(rows(&source, &format!("{}/*.png", source.lake), "").await?, top_png, "{name}: *.png");
    let all_png = expected(&source, |n| n.ends_with(".png"));
    assert_eq!(rows(&source, &format!("{}/**/*.png", source.lake), "").await?, all_png, "{name}: **/*.png");

    // One object by its URL.
    assert_eq!(rows(&source, &format!("{}/sub/g.png", source.lake), "").await?, expected(&source, |n| n == "sub/g.png"), "{name}: one object");

    // COPY to Parquet and back: same rows, the lake schema plus predictions.
    let out = tempfile::tempdir()?;
    let file = out.path().join("labels.parquet");
    let copy = format!("COPY (SELECT * FROM {}) TO '{}' STORED AS PARQUET", call(&source, &source.lake, ""), file.display());
    source.ctx.sql(&copy).await?.collect().await?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file)?)?.build()?;
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
    assert_eq!(sorted_rows(&batches), all, "{name}: Parquet round trip");
    let schema = batches[0].schema();
    let columns: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(columns, ["location", "size", "label", "label_id", "confidence", "ood_score", "is_ood", "status", "error"], "{name}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn local_directory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lake = dir.path().join("lake");
    write_objects(&lake)?;
    let lake = lake.display().to_string();
    conformance(Source { url: format!("file://{lake}"), lake, options: String::new(), ctx: session() }).await
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_store() -> anyhow::Result<()> {
    let store = Arc::new(InMemory::new());
    for (name, bytes, _) in objects() {
        store.put(&ObjectPath::from(format!("lake/{name}")), bytes.into()).await?;
    }
    let ctx = session();
    ctx.register_object_store(&url::Url::parse("memory://")?, store);
    conformance(Source { lake: "memory:///lake".into(), url: "memory:///lake".into(), options: String::new(), ctx }).await
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_on_loopback() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    write_objects(&root.path().join("photos").join("lake"))?;
    let addr = start_s3(root.path()).await?;
    conformance(Source { lake: "s3://photos/lake".into(), url: "s3://photos/lake".into(), options: s3_options(addr), ctx: session() }).await
}

#[tokio::test(flavor = "multi_thread")]
async fn http_webdav_on_loopback() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    write_objects(&root.path().join("lake"))?;
    let Some(server) = WebDav::start(root.path())? else {
        return Ok(());
    };
    let lake = format!("{}/lake", server.url);
    conformance(Source { url: lake.clone(), lake, options: ", 'allow_http', 'true'".into(), ctx: session() }).await
}

/// Store keys that change how a source is read reach the store: without `allow_http` the HTTP
/// store refuses a plain-http URL, and the rows say so rather than the query failing.
#[tokio::test(flavor = "multi_thread")]
async fn http_without_allow_http_is_refused() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    write_objects(&root.path().join("lake"))?;
    let Some(server) = WebDav::start(root.path())? else {
        return Ok(());
    };
    let source = Source { lake: String::new(), url: String::new(), options: String::new(), ctx: session() };
    let err = rows(&source, &format!("{}/lake", server.url), "").await.expect_err("plain http needs allow_http").to_string();
    assert!(err.to_lowercase().contains("http"), "{err}");
    Ok(())
}
