//! SQL end to end: `cliptta(...)` over a local directory, the memory store and an S3 API server
//! on loopback; `cliptta_table(...)` over Parquet; bad input; option errors; EXPLAIN; COPY.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BinaryArray, Int32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use crate::support::{lake_files, s3_options, session, start_s3, table, tiny_model, write_lake};

const CLASSES: &str = "cat,dog,bird";

/// `SELECT name, status, label in classes` over a location, sorted by name.
async fn statuses(ctx: &SessionContext, location: &str, extra: &str) -> anyhow::Result<String> {
    let sql = format!(
        "SELECT regexp_replace(location, '.*/', '') AS name, status, label IN ('cat', 'dog', 'bird') AS labelled, error IS NULL AS no_error \
         FROM cliptta('{location}', 'classes', '{CLASSES}', 'model', '{}', 'adapt_batch_size', 4, 'steps', 2, 'max_pixels', 10000{extra}) ORDER BY name",
        tiny_model()
    );
    table(ctx, &sql).await
}

const EXPECTED_LAKE: &str = "\
+---------------+--------------+----------+----------+
| name          | status       | labelled | no_error |
+---------------+--------------+----------+----------+
| a.png         | ok           | true     | true     |
| b.png         | ok           | true     | true     |
| c.jpg         | ok           | true     | true     |
| corrupt.jpg   | decode_error |          | false    |
| d.jpg         | ok           | true     | true     |
| e.png         | ok           | true     | true     |
| empty.png     | decode_error |          | false    |
| f.jpg         | ok           | true     | true     |
| huge.png      | too_large    |          | false    |
| notes.jpg     | decode_error |          | false    |
| truncated.png | decode_error |          | false    |
+---------------+--------------+----------+----------+";

#[tokio::test(flavor = "multi_thread")]
async fn local_lake_with_bad_input() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_lake(dir.path());
    let ctx = session();
    assert_eq!(statuses(&ctx, &dir.path().display().to_string(), "").await?, EXPECTED_LAKE);
    // file:// URLs and globs.
    let url = format!("file://{}/*.png", dir.path().display());
    let out = statuses(&ctx, &url, ", 'order', 'listing'").await?;
    assert_eq!(out.lines().filter(|l| l.contains(".png")).count(), 6, "{out}");
    assert!(!out.contains(".jpg"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn predictions_are_reproducible_and_columns_typed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_lake(dir.path());
    let ctx = session();
    let sql = format!(
        "SELECT * FROM cliptta('{}', 'classes', ['cat', 'dog', 'bird'], 'model', '{}', 'adapt_batch_size', 3, 'emit_probs', true, 'emit_embedding', true, 'open_set', true) ORDER BY location",
        dir.path().display(),
        tiny_model()
    );
    let a = ctx.sql(&sql).await?.collect().await?;
    let b = ctx.sql(&sql).await?.collect().await?;
    assert_eq!(pretty_format_batches(&a)?.to_string(), pretty_format_batches(&b)?.to_string(), "same seed, same results");
    let schema = a[0].schema();
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["location", "size", "label", "label_id", "confidence", "ood_score", "is_ood", "status", "error", "probs", "embedding"]);
    // The fixture's projection_dim (tests/fixtures/tiny-clip/config.json).
    assert!(matches!(schema.field(10).data_type(), DataType::FixedSizeList(_, 32)), "{:?}", schema.field(10));
    let rows: usize = a.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, lake_files().len());
    for batch in &a {
        let probs = batch.column(9).as_list::<i32>();
        let status = batch.column(7).as_string::<i32>();
        for i in 0..batch.num_rows() {
            if status.value(i) == "ok" {
                let p = probs.value(i);
                let p = p.as_primitive::<arrow::datatypes::Float32Type>();
                assert_eq!(p.len(), 3);
                assert!((p.values().iter().sum::<f32>() - 1.0).abs() < 1e-3);
            } else {
                assert!(probs.is_null(i));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_store() -> anyhow::Result<()> {
    let store = Arc::new(InMemory::new());
    for (name, bytes, _) in lake_files() {
        store.put(&ObjectPath::from(format!("lake/{name}")), bytes.into()).await?;
    }
    let ctx = session();
    let url = url::Url::parse("memory://")?;
    ctx.register_object_store(&url, store);
    assert_eq!(statuses(&ctx, "memory:///lake/", "").await?, EXPECTED_LAKE);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_on_loopback_and_copy_to_parquet() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    write_lake(&root.path().join("photos").join("lake"));
    let addr = start_s3(root.path()).await?;
    let ctx = session();
    let creds = s3_options(addr);
    assert_eq!(statuses(&ctx, "s3://photos/lake/", &creds).await?, EXPECTED_LAKE);

    let out = tempfile::tempdir()?;
    let file = out.path().join("labels.parquet");
    let copy = format!(
        "COPY (SELECT * FROM cliptta('s3://photos/lake/', 'classes', '{CLASSES}', 'model', '{}', 'adapt_batch_size', 4, 'steps', 1{creds})) TO '{}' STORED AS PARQUET",
        tiny_model(),
        file.display()
    );
    ctx.sql(&copy).await?.collect().await?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file)?)?.build()?;
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), lake_files().len());
    let schema = batches[0].schema();
    let names: Vec<_> = schema.fields().iter().map(|f| format!("{}:{}", f.name(), f.data_type())).collect();
    assert_eq!(
        names,
        ["location:Utf8", "size:Int64", "label:Utf8", "label_id:Int32", "confidence:Float32", "ood_score:Float32", "is_ood:Boolean", "status:Utf8", "error:Utf8"]
    );
    let first = batches[0].column(0).as_string::<i32>().value(0).to_string();
    assert!(first.starts_with("s3://photos/lake/"), "{first}");
    Ok(())
}

/// A Parquet file of `(id, image)` rows: the lake's files in order, then one null image; and
/// the expected status per id.
fn photos_parquet(dir: &std::path::Path) -> anyhow::Result<(std::path::PathBuf, Vec<(usize, &'static str)>)> {
    let files = lake_files();
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false), Field::new("image", DataType::Binary, true)]));
    let ids = Int32Array::from_iter_values(0..files.len() as i32 + 1);
    let mut images: Vec<Option<&[u8]>> = files.iter().map(|(_, b, _)| Some(b.as_slice())).collect();
    images.push(None);
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(BinaryArray::from_opt_vec(images))])?;
    let path = dir.join("photos.parquet");
    let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path)?, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    let mut want: Vec<(usize, &str)> = files.iter().enumerate().map(|(i, (_, _, s))| (i, *s)).collect();
    want.push((files.len(), "null_input"));
    Ok((path, want))
}

#[tokio::test(flavor = "multi_thread")]
async fn cliptta_table_over_parquet() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (path, want) = photos_parquet(dir.path())?;
    let ctx = session();
    ctx.register_parquet("photos", path.to_str().unwrap_or_default(), Default::default()).await?;
    let sql = format!(
        "SELECT id, status, label IS NOT NULL AS labelled FROM cliptta_table('photos', 'image', 'classes', '{CLASSES}', 'model', '{}', 'adapt_batch_size', 4, 'steps', 1, 'max_pixels', 10000) ORDER BY id",
        tiny_model()
    );
    let printed = table(&ctx, &sql).await?;
    for (id, status) in want {
        let line = printed.lines().find(|l| l.starts_with(&format!("| {id} "))).unwrap_or_default();
        assert!(line.contains(&format!("| {status} ")), "id {id} should be {status}:\n{printed}");
        assert_eq!(line.contains("true"), status == "ok", "{line}");
    }
    Ok(())
}

/// A query in parentheses as cliptta_table's input: its rows (only those it selects) and all
/// its columns come through, options may be named, the call takes an alias, and a query
/// without the named binary column is a planning error.
#[tokio::test(flavor = "multi_thread")]
async fn cliptta_table_over_a_query() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (path, want) = photos_parquet(dir.path())?;
    let ctx = session();
    ctx.register_parquet("photos", path.to_str().unwrap_or_default(), Default::default()).await?;
    let model = tiny_model();
    let sql = format!(
        "SELECT t.id, t.twice, t.status FROM cliptta_table((SELECT id, id * 2 AS twice, image FROM photos WHERE id % 2 = 0), 'image', \
         classes => '{CLASSES}', model => '{model}', adapt_batch_size => 4, steps => 1, max_pixels => 10000) AS t ORDER BY t.id"
    );
    let printed = table(&ctx, &sql).await?;
    let rows: Vec<&str> = printed.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| id ")).collect();
    let even: Vec<&(usize, &str)> = want.iter().filter(|(id, _)| id % 2 == 0).collect();
    assert_eq!(rows.len(), even.len(), "{printed}");
    for (line, (id, status)) in rows.iter().zip(even) {
        assert!(line.starts_with(&format!("| {id} ")) && line.contains(&format!("| {} ", id * 2)) && line.contains(&format!("| {status} ")), "id {id} should be {status}:\n{printed}");
    }

    let err = ctx
        .sql(&format!("SELECT * FROM cliptta_table((SELECT id FROM photos), 'id', 'classes', 'a', 'model', '{model}')"))
        .await
        .map(|_| ())
        .expect_err("an integer column is not images");
    assert!(err.to_string().contains("cliptta_table: column `id` has type Int32, expected Binary"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn option_errors_are_planning_errors() -> anyhow::Result<()> {
    let ctx = session();
    let model = tiny_model();
    let cases = [
        (format!("cliptta('/tmp', 'model', '{model}')"), "Error during planning: cliptta: option `classes` is required: a comma-separated list, a SQL list, or a file with one class per line".to_string()),
        (format!("cliptta('/tmp', 'classes', 'a', 'model', '{model}', 'lr', 'fast', 'mehtod', 'tent')"), "Error during planning: cliptta: option `lr`: `fast` is not a positive number; unknown option `mehtod` (did you mean `method`?)".to_string()),
        (format!("cliptta('/tmp', 'classes', 'a', 'model', '{model}', 'reset')"), "Error during planning: cliptta: options come in key, value pairs; option `reset` has no value".to_string()),
        ("cliptta(42)".to_string(), "Error during planning: cliptta: the first argument (location) must be a string; usage: cliptta('s3://bucket/images/', 'classes', 'cat,dog', ...)".to_string()),
        (format!("cliptta('ftp://x/y', 'classes', 'a', 'model', '{model}')"), "Error during planning: cliptta: invalid location `ftp://x/y`: unsupported scheme `ftp`; expected file, s3, gs, az, http(s) or memory".to_string()),
        (format!("cliptta('s3://b/x', 'classes', 'a', 'model', '{model}', 'aws_bogus', '1')"), "Error during planning: cliptta: invalid location `s3://b/`: store option `aws_bogus` does not apply to s3 locations".to_string()),
        (format!("cliptta_table('nope', 'image', 'classes', 'a', 'model', '{model}')"), "Error during planning: cliptta_table: table `nope` not found".to_string()),
    ];
    for (call, want) in cases {
        let err = match ctx.sql(&format!("SELECT * FROM {call}")).await {
            Ok(df) => df.collect().await.map(|_| ()).expect_err(&call),
            Err(e) => e,
        };
        assert_eq!(err.strip_backtrace(), want, "{call}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_shows_the_exec_and_analyze_its_metrics() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_lake(dir.path());
    let ctx = session();
    let call = format!(
        "cliptta('{}', 'classes', '{CLASSES}', 'model', '{}', 'adapt_batch_size', 4, 'steps', 1, 'max_pixels', 10000)",
        dir.path().display(),
        tiny_model()
    );
    let plan = table(&ctx, &format!("EXPLAIN SELECT * FROM {call}")).await?;
    // Whole lines of the physical plan (the table's cells, trimmed).
    let lines: Vec<&str> = plan.lines().flat_map(|l| l.split('|')).map(str::trim).collect();
    assert!(lines.contains(&"ClipTtaExec: method=cliptta, classes=3, batch=4, reset=never, settings=[steps=1]"), "{plan}");
    let listing = format!("ImageListingExec: location={}, extensions=jpg,jpeg,png,webp,gif,bmp,tif,tiff, order=shuffle(seed=42), partitions=1", dir.path().display());
    assert!(lines.contains(&listing.as_str()), "no line `{listing}` in\n{plan}");
    let analyzed = table(&ctx, &format!("EXPLAIN ANALYZE SELECT * FROM {call}")).await?;
    for needle in [
        "ClipTtaExec: method=cliptta",
        "output_rows=11",
        "rows_ok=6",
        "rows_failed_decode_error=4",
        "rows_failed_too_large=1",
        "rows_failed_fetch_error=0",
        "objects_listed=11",
        "objects_skipped=2",
        "adapt_batches=2",
        "adapt_time=",
        "fetch_time=",
        "decode_time=",
        "preprocess_time=",
        "load_time=",
    ] {
        assert!(analyzed.contains(needle), "missing {needle}:\n{analyzed}");
    }
    // `extensions => '*'` lists the lake's labels.csv and README too (as failed rows).
    let every = call.replace("'steps', 1", "'steps', 1, 'extensions', '*'");
    let statuses = table(&ctx, &format!("SELECT count(*) FILTER (WHERE status = 'decode_error') AS bad, count(*) FILTER (WHERE status = 'ok') AS good FROM {every}")).await?;
    assert!(statuses.contains("| 6   | 6    |"), "{statuses}");
    let err = ctx.sql(&format!("SELECT * FROM {}", call.replace("'steps', 1", "'steps', 1, 'extensions', '*.jpg'"))).await.unwrap_err().to_string();
    assert!(err.contains("option `extensions`: `*.jpg` is not a file extension"), "{err}");
    Ok(())
}

/// Copies the tiny model's checkpoint files into `dir`.
fn copy_tiny_model(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, _) in cliptta::source::MODEL_FILES {
        let from = Path::new(&tiny_model()).join(name);
        if from.is_file() {
            std::fs::copy(from, dir.join(name))?;
        }
    }
    Ok(())
}

/// Name, label and confidence of every row of the test lake, with `model` and `extra` options.
async fn predictions(ctx: &SessionContext, lake: &Path, model: &str, extra: &str) -> anyhow::Result<String> {
    let sql = format!(
        "SELECT regexp_replace(location, '.*/', '') AS name, status, label, confidence \
         FROM cliptta('{}', 'classes', '{CLASSES}', 'model', '{model}', 'adapt_batch_size', 4, 'steps', 2, 'max_pixels', 10000{extra}) ORDER BY name",
        lake.display()
    );
    table(ctx, &sql).await
}

#[tokio::test(flavor = "multi_thread")]
async fn model_urls_predict_like_the_local_path() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let lake = root.path().join("lake");
    write_lake(&lake);
    copy_tiny_model(&root.path().join("models").join("tiny"))?;
    let addr = start_s3(root.path()).await?;
    let ctx = session();
    let local = predictions(&ctx, &lake, &tiny_model(), "").await?;
    assert!(local.contains("| a.png         | ok "), "{local}");

    // S3 on loopback: the images are local, the store options serve the model's store.
    let creds = s3_options(addr);
    assert_eq!(predictions(&ctx, &lake, "s3://models/tiny/", &creds).await?, local);
    // Planning with emit_embedding reads config.json from the store for the column's width.
    let df = ctx
        .sql(&format!(
            "SELECT embedding FROM cliptta('{}', 'classes', '{CLASSES}', 'model', 's3://models/tiny', 'emit_embedding', true{creds})",
            lake.display()
        ))
        .await?;
    assert!(matches!(df.schema().field(0).data_type(), DataType::FixedSizeList(_, 32)), "{}", df.schema());

    // The memory store registered in the session.
    let store = Arc::new(InMemory::new());
    for (name, _) in cliptta::source::MODEL_FILES {
        let file = Path::new(&tiny_model()).join(name);
        if file.is_file() {
            store.put(&ObjectPath::from(format!("models/tiny/{name}")), std::fs::read(file)?.into()).await?;
        }
    }
    ctx.register_object_store(&url::Url::parse("memory://")?, store);
    assert_eq!(predictions(&ctx, &lake, "memory:///models/tiny/", "").await?, local);

    // A URL without a checkpoint fails the query, naming the missing object.
    let err = predictions(&ctx, &lake, "s3://models/none/", &creds).await.expect_err("no model there").to_string();
    assert!(err.contains("s3://models/none/config.json"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_tree_render_shows_the_exec_and_its_options() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_lake(dir.path());
    let ctx = session();
    ctx.sql("SET datafusion.explain.format = 'tree'").await?.collect().await?;
    let sql = format!(
        "EXPLAIN SELECT * FROM cliptta('{}', 'classes', '{CLASSES}', 'model', '{}', 'adapt_batch_size', 8, 'open_set', true, 'reset', 'per_partition')",
        dir.path().display(),
        tiny_model()
    );
    let plan = table(&ctx, &sql).await?;
    // Each key=value line of the TreeRender display becomes a `key: value` line in the box.
    for needle in ["ClipTtaExec", "method: cliptta", "classes: 3", "batch: 8", "reset:", "per_partition", "open_set: true", "ImageListingExec"] {
        assert!(plan.contains(needle), "missing `{needle}` in the tree:\n{plan}");
    }
    assert!(!plan.contains("ClipTtaExec: method="), "the tree shows key: value lines, not the one-line form:\n{plan}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn live_metrics_count_every_row_for_progress() -> anyhow::Result<()> {
    use cliptta::sql::{ClipTtaExec, ClipTtaOptions, ClipTtaProvider, OptionValue, ProviderSource};
    let dir = tempfile::tempdir()?;
    write_lake(dir.path());
    let pairs: Vec<(String, OptionValue)> = [("classes", CLASSES), ("model", &tiny_model()), ("max_pixels", "10000"), ("partitions", "2"), ("adapt_batch_size", "3")]
        .iter()
        .map(|(k, v)| (k.to_string(), OptionValue::from(*v)))
        .collect();
    let options = ClipTtaOptions::parse(&pairs).map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    let location = cliptta::source::ImageLocation::parse(&dir.path().display().to_string())?;
    let ctx = session();
    let plan = ctx.read_table(Arc::new(ClipTtaProvider::try_new(ProviderSource::Lake(location), options)?))?.create_physical_plan().await?;
    let exec = plan.downcast_ref::<ClipTtaExec>().ok_or_else(|| anyhow::anyhow!("root is not ClipTtaExec"))?;
    assert!(exec.live_metrics().is_empty(), "nothing runs before execution");
    let rows: usize = datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx()).await?.iter().map(RecordBatch::num_rows).sum();
    let metrics = exec.live_metrics();
    assert_eq!(metrics.len(), 2, "one per partition");
    assert_eq!(metrics.iter().map(|m| m.rows_done()).sum::<usize>(), rows);
    assert_eq!(metrics.iter().map(|m| m.rows_failed_total()).sum::<usize>(), 5);
    assert_eq!(rows, lake_files().len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn named_arguments_plan_like_key_value_pairs() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_lake(dir.path());
    let ctx = session();
    let (lake, model) = (dir.path().display(), tiny_model());
    let select = "SELECT regexp_replace(location, '.*/', '') AS name, status, label, confidence FROM";
    let positional = table(
        &ctx,
        &format!("{select} cliptta('{lake}', 'classes', '{CLASSES}', 'model', '{model}', 'adapt_batch_size', 4, 'steps', 2, 'max_pixels', 10000) ORDER BY name"),
    )
    .await?;
    let named = table(
        &ctx,
        &format!("{select} cliptta('{lake}', classes => '{CLASSES}', model => '{model}', adapt_batch_size => 4, steps => 2, max_pixels => 10000) ORDER BY name"),
    )
    .await?;
    assert_eq!(named, positional);
    let mixed = table(
        &ctx,
        &format!("{select} cliptta('{lake}', 'classes', '{CLASSES}', 'model', '{model}', adapt_batch_size => 4, steps => 2, max_pixels => 10000) ORDER BY name"),
    )
    .await?;
    assert_eq!(mixed, positional);

    // A list value, and cliptta_table with its positional table and column.
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("content", DataType::Binary, true)])),
        vec![Arc::new(BinaryArray::from_iter(lake_files().iter().take(3).map(|(_, bytes, _)| Some(bytes.clone()))))],
    )?;
    ctx.register_batch("photos", batch)?;
    let rows = table(&ctx, &format!("SELECT count(*) AS n FROM cliptta_table('photos', 'content', classes => ['cat', 'dog'], model => '{model}', method => 'zero_shot')")).await?;
    assert!(rows.contains("| 3 "), "{rows}");

    let planning_error = |sql: String| {
        let ctx = ctx.clone();
        async move { ctx.sql(&sql).await.map(|_| ()).expect_err(&sql).to_string() }
    };
    let err = planning_error(format!("SELECT * FROM cliptta('{lake}', classes => 'a,b', 'model', '{model}')")).await;
    assert!(err.contains("named arguments come last"), "{err}");
    let err = planning_error(format!("SELECT * FROM cliptta('{lake}', classes => 'a,b', model => '{model}', clases => 'c')")).await;
    assert!(err.contains("unknown option `clases` (did you mean `classes`?)"), "{err}");
    Ok(())
}

/// Every registered method runs through `cliptta(...)` with its own settings as options: each
/// input row once with its status, the settings in EXPLAIN, and a setting the method lacks a
/// planning error naming both.
#[tokio::test(flavor = "multi_thread")]
async fn every_method_runs_in_sql_with_its_settings() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_lake(dir.path());
    let ctx = session();
    let model = tiny_model();
    let lake = dir.path().display();
    for (method, settings) in [
        ("zero_shot", ""),
        ("tent", ", 'steps', 1, 'beta_reg', 0.5"),
        ("cliptta", ", 'steps', 1, 'num_shots', 2, 'sample_size', 4"),
        ("tda", ", 'pos_alpha', 1.5, 'neg_capacity', 3"),
        ("unient", ", 'steps', 1, 'open_set', true"),
        ("sar", ", 'steps', 1, 'rho', 0.1"),
    ] {
        let call = format!("cliptta('{lake}', 'classes', '{CLASSES}', 'model', '{model}', 'adapt_batch_size', 4, 'max_pixels', 10000, 'method', '{method}'{settings})");
        let sql = format!(
            "SELECT regexp_replace(location, '.*/', '') AS name, status, label IN ('cat', 'dog', 'bird') AS labelled, error IS NULL AS no_error FROM {call} ORDER BY name"
        );
        assert_eq!(table(&ctx, &sql).await?, EXPECTED_LAKE, "{method}");
        let plan = table(&ctx, &format!("EXPLAIN SELECT * FROM {call}")).await?;
        let wanted = match method {
            "zero_shot" => "ClipTtaExec: method=zero_shot, classes=3, batch=4, reset=never".to_string(),
            "tent" => "ClipTtaExec: method=tent, classes=3, batch=4, reset=never, settings=[steps=1, beta_reg=0.5]".to_string(),
            "cliptta" => "ClipTtaExec: method=cliptta, classes=3, batch=4, reset=never, settings=[steps=1, num_shots=2, sample_size=4]".to_string(),
            "tda" => "ClipTtaExec: method=tda, classes=3, batch=4, reset=never, settings=[pos_alpha=1.5, neg_capacity=3]".to_string(),
            "unient" => "ClipTtaExec: method=unient, classes=3, batch=4, reset=never, open_set=true, settings=[steps=1]".to_string(),
            _ => "ClipTtaExec: method=sar, classes=3, batch=4, reset=never, settings=[rho=0.1]".to_string(),
        };
        let lines: Vec<&str> = plan.lines().flat_map(|l| l.split('|')).map(str::trim).collect();
        assert!(lines.contains(&wanted.as_str()), "no line `{wanted}` in\n{plan}");
    }
    let err = ctx
        .sql(&format!("SELECT * FROM cliptta('{lake}', 'classes', '{CLASSES}', 'model', '{model}', 'method', 'tda', 'num_shots', 16)"))
        .await
        .map(|_| ())
        .expect_err("tda has no num_shots");
    assert_eq!(err.strip_backtrace(), "Error during planning: cliptta: option `num_shots` is a setting of cliptta, not of method tda");
    Ok(())
}
