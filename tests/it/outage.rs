//! Store outages: the S3 test server behind a loopback TCP relay that the test stops and
//! starts. Down for 10 s mid-run: fetches retry with backoff and every row ends `ok`. Down for
//! good: rows become `fetch_error` once `fetch_deadline` has passed, and the query ends; run
//! again once the store is back, a checkpointed job fetches only those rows again. The
//! store's secret key never appears in EXPLAIN, the rows' errors, Parquet metadata or logs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch};
use datafusion::physical_plan::execute_stream;
use futures::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::support::{image_bytes, session, start_s3, table, tiny_model};

/// Forwards TCP connections from its own loopback port to `target`, until stopped; started
/// again, it listens on the same port. Stopping closes the open connections too, so pooled
/// keep-alive connections fail as they would when a server goes away.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> anyhow::Result<Arc<Self>> {
        let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = probe.local_addr()?;
        drop(probe);
        let relay = Arc::new(Self { addr, target, task: Mutex::new(None) });
        relay.up().await?;
        Ok(relay)
    }

    async fn up(&self) -> anyhow::Result<()> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(self.addr)?;
        let listener = socket.listen(64)?;
        let target = self.target;
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        *self.task.lock().await = Some(task);
        Ok(())
    }

    /// Stops listening and drops every relayed connection (the JoinSet aborts its tasks).
    async fn down(&self) {
        if let Some(task) = self.task.lock().await.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

const SECRET: &str = "SECRETTEST";

/// A lake of `n` PNGs in bucket `photos` under `lake/`.
fn write_lake(root: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let dir = root.join("photos").join("lake");
    std::fs::create_dir_all(&dir)?;
    for i in 0..n {
        std::fs::write(dir.join(format!("{i:03}.png")), image_bytes(24, 24, i as u8, image::ImageFormat::Png))?;
    }
    Ok(())
}

fn call(relay: &Relay, extra: &str) -> String {
    format!(
        "cliptta('s3://photos/lake', 'classes', 'cat,dog', 'model', '{}', 'adapt_batch_size', 8, 'steps', 1, 'concurrency', 16, \
         'aws_endpoint', 'http://{}', 'allow_http', 'true', 'aws_access_key_id', 'AKIDTEST', 'aws_secret_access_key', '{SECRET}', \
         'aws_region', 'us-east-1'{extra})",
        tiny_model(),
        relay.addr
    )
}

/// Runs `sql`, calling `after_first` once the first batch has arrived; returns the batches.
async fn run_with(sql: &str, after_first: impl std::future::Future<Output = ()>) -> anyhow::Result<Vec<RecordBatch>> {
    let ctx = session();
    let plan = ctx.sql(sql).await?.create_physical_plan().await?;
    let mut stream = execute_stream(plan, ctx.task_ctx())?;
    let mut batches = vec![stream.next().await.expect("a first batch")?];
    after_first.await;
    while let Some(batch) = stream.next().await {
        batches.push(batch?);
    }
    Ok(batches)
}

/// (status, error or empty) of every row, in order.
fn statuses(batches: &[RecordBatch]) -> Vec<(String, String)> {
    column_text(batches, &["status", "error"]).into_iter().map(|mut r| (r.remove(0), r.remove(0))).collect()
}

/// The named columns of every row as text (a null as the empty string), in order.
fn column_text(batches: &[RecordBatch], names: &[&str]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            rows.push(
                names
                    .iter()
                    .map(|n| {
                        let c = b.column_by_name(n).unwrap();
                        if c.is_null(i) { String::new() } else { arrow::util::display::array_value_to_string(c, i).unwrap() }
                    })
                    .collect(),
            );
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_down_for_ten_seconds_loses_no_row() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    write_lake(root.path(), 32)?;
    let relay = Relay::start(start_s3(root.path()).await?).await?;
    let r = relay.clone();
    let batches = run_with(&format!("SELECT location, status, error FROM {}", call(&relay, "")), async move {
        r.down().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        r.up().await.expect("relay restarts");
    })
    .await?;
    let rows = statuses(&batches);
    assert_eq!(rows.len(), 32);
    assert!(rows.iter().all(|(s, _)| s == "ok"), "{rows:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_stays_down_ends_in_fetch_errors_within_the_deadline() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    write_lake(root.path(), 24)?;
    let relay = Relay::start(start_s3(root.path()).await?).await?;
    let r = relay.clone();
    let started = Instant::now();
    let ckpt = root.path().join("ckpt");
    let query = format!("SELECT location, status, error, label, confidence FROM {}", call(&relay, &format!(", 'fetch_deadline', 3, 'checkpoint_dir', '{}'", ckpt.display())));
    let batches = run_with(&query, async move { r.down().await }).await?;
    let elapsed = started.elapsed();
    let rows = statuses(&batches);
    assert_eq!(rows.len(), 24);
    let failed: Vec<&(String, String)> = rows.iter().filter(|(s, _)| s != "ok").collect();
    assert_eq!(rows.iter().filter(|(s, _)| s == "ok").count(), 8, "{rows:?}");
    assert!(failed.iter().all(|(s, e)| s == "fetch_error" && e.contains("no answer within the fetch deadline of 3 s")), "{failed:?}");
    assert!(failed.iter().all(|(_, e)| !e.contains(SECRET)), "{failed:?}");
    // Two chunks of 8 failing rows, each waiting out one deadline with all its fetches in flight.
    assert!(elapsed < Duration::from_secs(40), "took {elapsed:?}");

    // The store is back: running the checkpointed job again fetches the failed rows only, puts
    // them back in place and keeps the rows that were already labelled as they were.
    relay.up().await?;
    let again = session().sql(&query).await?.collect().await?;
    let (first, second) = (labelled(&batches), labelled(&again));
    assert_eq!(second.len(), 24);
    assert!(second.iter().all(|r| r.1 == "ok"), "{second:?}");
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.0, b.0, "rows keep their order");
        if a.1 == "ok" {
            assert_eq!(a, b, "a row labelled before is replayed, not recomputed");
        }
    }
    // The checkpoint now holds the refetched rows: a third run replays them as they are.
    let third = session().sql(&query).await?.collect().await?;
    assert_eq!(labelled(&third), second);
    Ok(())
}

/// (location, status, label, confidence as text) of every row, in order.
fn labelled(batches: &[RecordBatch]) -> Vec<(String, String, String, String)> {
    column_text(batches, &["location", "status", "label", "confidence"])
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone(), r[3].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_stay_out_of_plans_errors_and_files() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    write_lake(root.path(), 4)?;
    let relay = Relay::start(start_s3(root.path()).await?).await?;
    let ctx = session();
    for explain in ["EXPLAIN", "EXPLAIN VERBOSE", "EXPLAIN ANALYZE"] {
        let plan = table(&ctx, &format!("{explain} SELECT * FROM {}", call(&relay, ""))).await?;
        assert!(!plan.contains(SECRET), "{explain} shows the secret:\n{plan}");
    }
    // A planning error that quotes the options.
    let err = ctx.sql(&format!("SELECT * FROM {}", call(&relay, ", 'aws_nonsense', 'x'"))).await.unwrap_err().to_string();
    assert!(err.contains("aws_nonsense") && !err.contains(SECRET), "{err}");
    // Parquet written by COPY (its key/value metadata records the run).
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out.parquet");
    ctx.sql(&format!("COPY (SELECT * FROM {}) TO '{}' STORED AS PARQUET", call(&relay, ""), out.display())).await?.collect().await?;
    let file = std::fs::read(&out)?;
    assert!(!file.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "the Parquet file holds the secret");
    // A checkpointed run's manifest and part files.
    let ckpt = dir.path().join("ckpt");
    ctx.sql(&format!("SELECT * FROM {}", call(&relay, &format!(", 'checkpoint_dir', '{}'", ckpt.display())))).await?.collect().await?;
    for entry in std::fs::read_dir(&ckpt)? {
        let bytes = std::fs::read(entry?.path())?;
        assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "a checkpoint file holds the secret");
    }
    // The CLI's output and debug logs.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cliptta"))
        .args(["label", "s3://photos/lake", "--out", dir.path().join("cli.parquet").to_str().unwrap(), "--classes", "cat,dog", "--model", &tiny_model()])
        .args(["-o", &format!("aws_endpoint=http://{}", relay.addr), "-o", "allow_http=true", "-o", "aws_access_key_id=AKIDTEST"])
        .args(["-o", &format!("aws_secret_access_key={SECRET}"), "-o", "aws_region=us-east-1"])
        .env("RUST_LOG", "trace")
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for stream in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains(SECRET), "the CLI printed the secret");
    }
    assert!(!std::fs::read(dir.path().join("cli.parquet"))?.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    Ok(())
}
