//! Ballista (feature `ballista`): the codecs round-trip plans that still run the same; a
//! scheduler and two executors, started as separate `cliptta cluster` processes on loopback,
//! return every object of a local lake and of an S3 lake exactly once with the predictions of
//! the single-process run; an executor killed mid-query loses and duplicates no row; losing
//! every executor fails the query with the scheduler's reason.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Float32Type;
use cliptta::cluster::{client_session, ClipTtaLogicalCodec, ClipTtaPhysicalCodec};
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::{
    logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};

use crate::support::{image_bytes, lake_files, s3_options, start_s3, tiny_model};

const CLASSES: &str = "cat,dog,bird";

/// `lake_files` (6 good, 5 bad objects) plus 19 more images: 30 objects, enough for every
/// partition of 4 to hold several.
fn write_big_lake(dir: &Path) {
    std::fs::create_dir_all(dir).expect("lake dir");
    for (name, bytes, _) in lake_files() {
        std::fs::write(dir.join(name), bytes).expect("lake file");
    }
    for i in 0..19u8 {
        let format = if i % 2 == 0 { image::ImageFormat::Png } else { image::ImageFormat::Jpeg };
        let ext = if i % 2 == 0 { "png" } else { "jpg" };
        std::fs::write(dir.join(format!("extra-{i:02}.{ext}")), image_bytes(24 + u32::from(i), 30, 20 + i * 7, format)).expect("lake file");
    }
}

fn query(location: &str, extra: &str) -> String {
    format!(
        "SELECT location, status, label, confidence FROM cliptta('{location}', 'classes', '{CLASSES}', 'model', '{}', \
         'adapt_batch_size', 3, 'steps', 2, 'max_pixels', 10000, 'partitions', 4, 'reset', 'per_partition'{extra})",
        tiny_model()
    )
}

/// (location, status, label, confidence) rows, sorted by location.
fn rows(batches: &[RecordBatch]) -> Vec<(String, String, Option<String>, Option<f32>)> {
    let mut out = Vec::new();
    for b in batches {
        let (loc, status, label) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>(), b.column(2).as_string::<i32>());
        let conf = b.column(3).as_primitive::<Float32Type>();
        for i in 0..b.num_rows() {
            let label = (!arrow::array::Array::is_null(label, i)).then(|| label.value(i).to_string());
            let conf = (!arrow::array::Array::is_null(conf, i)).then(|| conf.value(i));
            out.push((loc.value(i).to_string(), status.value(i).to_string(), label, conf));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn single_process(sql: &str) -> anyhow::Result<Vec<(String, String, Option<String>, Option<f32>)>> {
    let ctx = SessionContext::new();
    cliptta::sql::register(&ctx);
    Ok(rows(&ctx.sql(sql).await?.collect().await?))
}

/// Same objects, statuses and labels; confidences equal to float noise (the same kernels run
/// in both, but thread counts may differ between processes).
fn assert_same_predictions(cluster: &[(String, String, Option<String>, Option<f32>)], single: &[(String, String, Option<String>, Option<f32>)]) {
    assert_eq!(cluster.len(), single.len(), "row counts differ");
    for (c, s) in cluster.iter().zip(single) {
        assert_eq!((&c.0, &c.1, &c.2), (&s.0, &s.1, &s.2), "row differs");
        match (c.3, s.3) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-5, "{}: confidence {a} vs {b}", c.0),
            (a, b) => assert_eq!(a, b, "{}", c.0),
        }
    }
    let mut locations: Vec<_> = cluster.iter().map(|r| &r.0).collect();
    locations.dedup();
    assert_eq!(locations.len(), cluster.len(), "an object came back twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn codecs_round_trip_plans_that_run_the_same() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_big_lake(dir.path());
    let sql = query(&dir.path().display().to_string(), "");
    let ctx = SessionContext::new();
    cliptta::sql::register(&ctx);
    let df = ctx.sql(&sql).await?;

    // Logical: the table travels as configuration and plans again on the other side.
    let logical = df.logical_plan().clone();
    let bytes = logical_plan_to_bytes_with_extension_codec(&logical, &ClipTtaLogicalCodec::default())?;
    let back = logical_plan_from_bytes_with_extension_codec(&bytes, &ctx.task_ctx(), &ClipTtaLogicalCodec::default())?;
    assert_eq!(format!("{}", back.display_indent_schema()), format!("{}", logical.display_indent_schema()));

    // Physical: ClipTtaExec and its listing come back and give the same rows.
    let plan = df.create_physical_plan().await?;
    let bytes = physical_plan_to_bytes_with_extension_codec(plan.clone(), &ClipTtaPhysicalCodec::default())?;
    let fresh = SessionContext::new();
    let decoded = physical_plan_from_bytes_with_extension_codec(&bytes, &fresh.task_ctx(), &ClipTtaPhysicalCodec::default())?;
    let shown = datafusion::physical_plan::displayable(decoded.as_ref()).indent(false).to_string();
    assert!(shown.contains("ClipTtaExec: method=cliptta, classes=3, batch=3, reset=per_partition"), "{shown}");
    assert!(shown.contains("partitions=4"), "{shown}");
    let got = rows(&datafusion::physical_plan::collect(decoded, fresh.task_ctx()).await?);
    assert_same_predictions(&got, &single_process(&sql).await?);
    assert_eq!(got.len(), 30);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn what_cannot_run_on_a_cluster_is_a_planning_error() -> anyhow::Result<()> {
    let ctx = SessionContext::new();
    cliptta::sql::register(&ctx);
    let sql = format!("SELECT * FROM cliptta('memory:///lake/', 'classes', 'a,b', 'model', '{}')", tiny_model());
    let plan = ctx.sql(&sql).await?.logical_plan().clone();
    let err = logical_plan_to_bytes_with_extension_codec(&plan, &ClipTtaLogicalCodec::default()).unwrap_err().to_string();
    assert!(err.contains("memory:// store, which exists in one process only"), "{err}");

    ctx.sql("CREATE TABLE photos (image BYTEA) AS VALUES (X'00')").await?.collect().await?;
    let sql = format!("SELECT * FROM cliptta_table('photos', 'image', 'classes', 'a,b', 'model', '{}')", tiny_model());
    let plan = ctx.sql(&sql).await?.logical_plan().clone();
    let err = logical_plan_to_bytes_with_extension_codec(&plan, &ClipTtaLogicalCodec::default()).unwrap_err().to_string();
    assert!(err.contains("cliptta_table('photos', ...) cannot run on a cluster yet"), "{err}");
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A `cliptta cluster` process whose stderr lines arrive on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn start(args: &[&str]) -> Self {
        // CLIPTTA_BIN overrides the binary: where several checkouts share one target directory,
        // target/debug/cliptta is whichever build linked last, possibly one without `ballista`.
        let bin = std::env::var_os("CLIPTTA_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_cliptta").into());
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "ballista_executor=info,ballista_scheduler=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cliptta cluster");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(()),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        anyhow::bail!("no `{needle}` within {timeout:?}")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scheduler and two executors (one task slot each) on loopback.
struct Cluster {
    url: String,
    _scheduler: Proc,
    executors: Vec<Proc>,
}

impl Cluster {
    fn start(scheduler_extra: &[&str]) -> anyhow::Result<Self> {
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let mut args = vec!["cluster", "scheduler", "--bind", &bind, "--external-host", "127.0.0.1"];
        args.extend_from_slice(scheduler_extra);
        let scheduler = Proc::start(&args);
        wait_for_port(port)?;
        let address = format!("127.0.0.1:{port}");
        let executors: Vec<Proc> = (0..2)
            .map(|_| {
                let (flight, grpc) = (free_port().to_string(), free_port().to_string());
                Proc::start(&[
                    "cluster", "executor", "--scheduler", &address, "--external-host", "127.0.0.1", "--flight-port", &flight, "--grpc-port", &grpc,
                ])
            })
            .collect();
        for e in &executors {
            e.wait_for("registration succeed", Duration::from_secs(60))?;
        }
        Ok(Self { url: format!("df://127.0.0.1:{port}"), _scheduler: scheduler, executors })
    }
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("scheduler did not listen on {port}")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_executors_match_the_single_process_run() -> anyhow::Result<()> {
    let cluster = Cluster::start(&[])?;
    let ctx = client_session(&cluster.url).await?;

    // A local lake (every process reads the same directory).
    let dir = tempfile::tempdir()?;
    write_big_lake(dir.path());
    let sql = query(&dir.path().display().to_string(), "");
    let got = rows(&ctx.sql(&sql).await?.collect().await?);
    assert_eq!(got.len(), 30);
    assert_same_predictions(&got, &single_process(&sql).await?);

    // The same lake behind the S3 API on loopback; the executors get endpoint and keys from
    // the plan's options.
    let root = tempfile::tempdir()?;
    write_big_lake(&root.path().join("photos").join("lake"));
    let addr = start_s3(root.path()).await?;
    let creds = s3_options(addr);
    let sql = query("s3://photos/lake/", &creds);
    let got = rows(&ctx.sql(&sql).await?.collect().await?);
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|r| r.0.starts_with("s3://photos/lake/")), "{:?}", got[0]);
    assert_same_predictions(&got, &single_process(&sql).await?);

    // Aggregates from cliptta-udfs plan on the client and run on the executors.
    let sql = format!("SELECT count(*) AS n, count(DISTINCT location) AS d FROM ({})", query(&dir.path().display().to_string(), ""));
    let batches = ctx.sql(&sql).await?.collect().await?;
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
    assert!(text.contains("| 30 | 30 |"), "{text}");

    // COPY ... STORED AS PARQUET: the file format travels through the logical codec and the
    // executors write the files (same machine here, so the client can read them back).
    let out = tempfile::tempdir()?;
    let target = out.path().join("labels");
    ctx.sql(&format!("COPY ({}) TO '{}' STORED AS PARQUET", query(&dir.path().display().to_string(), ""), target.display())).await?.collect().await?;
    let local = SessionContext::new();
    let written = local.read_parquet(target.display().to_string(), Default::default()).await?.count().await?;
    assert_eq!(written, 30);
    Ok(())
}

/// `SELECT columns` over the demo lake's first 60 images with the default model: slow enough per
/// task that executors can be killed while it runs.
fn demo_lake_query(columns: &str, classes: &str) -> String {
    let lake = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/lake/images/00[0-5]*.png");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/default");
    format!(
        "SELECT {columns} FROM cliptta('{}', 'classes', '{classes}', 'model', '{}', \
         'adapt_batch_size', 8, 'partitions', 4, 'reset', 'per_partition')",
        lake.display(),
        model.display()
    )
}

/// Runs `sql` on `ctx` in the background.
fn spawn_query(ctx: &SessionContext, sql: &str) -> tokio::task::JoinHandle<datafusion::common::Result<Vec<RecordBatch>>> {
    let (ctx, sql) = (ctx.clone(), sql.to_string());
    tokio::spawn(async move { ctx.sql(&sql).await?.collect().await })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_executor_loses_no_row() -> anyhow::Result<()> {
    // The default model is slower than the tiny fixture, so tasks are still running when one
    // executor is killed; the scheduler declares it lost after 3 s without a heartbeat and runs
    // its tasks again on the other executor.
    let sql = demo_lake_query("location, status, label, confidence", "t-shirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle boot");
    let mut cluster = Cluster::start(&["--executor-timeout", "3"])?;
    let ctx = client_session(&cluster.url).await?;
    let running = spawn_query(&ctx, &sql);
    let victim = &mut cluster.executors[0];
    victim.wait_for("Execute task", Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(500));
    victim.child.kill()?;
    let batches = tokio::time::timeout(Duration::from_secs(300), running).await???;
    let got = rows(&batches);
    assert_eq!(got.len(), 60, "data/lake/images/000*..005* holds 60 images");
    assert_same_predictions(&got, &single_process(&sql).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_every_executor_fails_the_query_with_a_clear_error() -> anyhow::Result<()> {
    // Both executors die mid-query. The scheduler declares each lost after 3 s without a
    // heartbeat, waits the same grace period for one to register again, then fails the job
    // rather than wait forever; the client must get that reason, not hang or return rows.
    let sql = demo_lake_query("location, label", "t-shirt,trouser,bag");
    let mut cluster = Cluster::start(&["--executor-timeout", "3"])?;
    let ctx = client_session(&cluster.url).await?;
    let running = spawn_query(&ctx, &sql);
    cluster.executors[0].wait_for("Execute task", Duration::from_secs(60))?;
    for executor in &mut cluster.executors {
        executor.child.kill()?;
        executor.child.wait()?;
    }
    let outcome = tokio::time::timeout(Duration::from_secs(120), running).await??;
    let err = match outcome {
        Ok(batches) => anyhow::bail!("the query returned {} rows with no executor left", batches.iter().map(|b| b.num_rows()).sum::<usize>()),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("all executors were lost"), "{err}");
    Ok(())
}
