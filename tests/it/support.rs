//! Shared helpers for the integration tests.

use std::path::PathBuf;

use candle_core::Tensor;

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The reference outputs written by `tests/fixtures/make_tiny_clip.py`.
pub fn tiny_reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("tiny-clip-reference.json")).expect("reference fixture");
    serde_json::from_str(&text).expect("reference JSON")
}

/// A JSON array of numbers as f64.
pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

/// Max absolute difference divided by the max absolute reference value.
pub fn rel_max_err(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let scale = expected.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
    actual.iter().zip(expected).fold(0f64, |m, (a, e)| m.max((a - e).abs())) / scale
}

/// A tensor flattened to f64.
pub fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all().and_then(|t| t.to_dtype(candle_core::DType::F64)).and_then(|t| t.to_vec1()).expect("tensor")
}

/// The tiny fixture model's directory, as a string for SQL.
pub fn tiny_model() -> String {
    fixture("tiny-clip").display().to_string()
}

/// Encodes a synthetic image (a colour gradient) in `format`.
pub fn image_bytes(w: u32, h: u32, seed: u8, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x as u8).wrapping_mul(seed), (y as u8).wrapping_add(seed), seed.wrapping_mul(37)])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// A small lake: six good images (PNG and JPEG) and five bad objects, with the status each
/// should get when `max_pixels` is 10000.
pub fn lake_files() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    use image::ImageFormat::{Jpeg, Png};
    let png = image_bytes(40, 30, 3, Png);
    let mut corrupt = image_bytes(48, 48, 9, Jpeg);
    for b in corrupt.iter_mut().skip(20) {
        *b = 0x5a;
    }
    vec![
        ("a.png", png.clone(), "ok"),
        ("b.png", image_bytes(32, 64, 5, Png), "ok"),
        ("c.jpg", image_bytes(64, 48, 7, Jpeg), "ok"),
        ("d.jpg", image_bytes(50, 50, 11, Jpeg), "ok"),
        ("e.png", image_bytes(33, 33, 13, Png), "ok"),
        ("f.jpg", image_bytes(40, 80, 17, Jpeg), "ok"),
        ("corrupt.jpg", corrupt, "decode_error"),
        ("empty.png", Vec::new(), "decode_error"),
        ("huge.png", image_bytes(200, 100, 1, Png), "too_large"),
        // An HTML error page saved under an image name: listed, and a decode error.
        ("notes.jpg", b"<html><body>404 Not Found</body></html>\n".to_vec(), "decode_error"),
        ("truncated.png", png[..png.len() / 2].to_vec(), "decode_error"),
    ]
}

/// Writes [`lake_files`] under `dir`.
pub fn write_lake(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("lake dir");
    for (name, bytes, _) in lake_files() {
        std::fs::write(dir.join(name), bytes).expect("lake file");
    }
    // Not images: a directory does not list them (no row).
    std::fs::write(dir.join("labels.csv"), "path,label\na.png,cat\n").expect("lake file");
    std::fs::write(dir.join("README"), "a test lake\n").expect("lake file");
}

/// An S3 API server (s3s-fs over `root`, one bucket per top-level directory) on a free loopback
/// port, with access key `AKIDTEST` / `SECRETTEST`; it serves until the test's runtime ends.
pub async fn start_s3(root: &std::path::Path) -> anyhow::Result<std::net::SocketAddr> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    let mut builder = s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(root).map_err(|e| anyhow::anyhow!("{e:?}"))?);
    builder.set_auth(s3s::auth::SimpleAuth::from_single("AKIDTEST", "SECRETTEST"));
    let service = builder.build().into_shared();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let _ = Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(socket), service).await;
            });
        }
    });
    Ok(addr)
}

/// The S3 store options of a `cliptta(...)` call against [`start_s3`]'s server.
pub fn s3_options(addr: std::net::SocketAddr) -> String {
    format!(
        ", 'aws_endpoint', 'http://{addr}', 'allow_http', 'true', 'aws_access_key_id', 'AKIDTEST', 'aws_secret_access_key', 'SECRETTEST', 'aws_region', 'us-east-1'"
    )
}

/// A WebDAV server (`rclone serve webdav`) on loopback serving a directory; object_store's
/// HTTP store lists through WebDAV `PROPFIND`. Stopped when dropped.
pub struct WebDav {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub url: String,
}

impl WebDav {
    /// Starts the server, or returns `None` when `rclone` is not installed and
    /// `CLIPTTA_REQUIRE_TEST_TOOLS` is unset (`scripts/test.sh` installs rclone and sets it, so
    /// CI never skips).
    pub fn start(root: &std::path::Path) -> anyhow::Result<Option<Self>> {
        use std::io::BufRead;
        let spawned = std::process::Command::new("rclone")
            .args(["serve", "webdav", "--addr", "127.0.0.1:0", "--config", "/dev/null"])
            .arg(root)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os("CLIPTTA_REQUIRE_TEST_TOOLS").is_none() => {
                eprintln!("\n*** SKIPPED: `rclone` is not installed, so the HTTP (WebDAV) source is not tested here; scripts/install-test-tools.sh installs it ***\n");
                return Ok(None);
            }
            Err(e) => anyhow::bail!("cannot start `rclone serve webdav` (run scripts/install-test-tools.sh): {e}"),
        };
        let stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        // rclone logs "... WebDav Server started on http://127.0.0.1:PORT/" once listening.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(i) = line.find("started on http://") {
                        let _ = tx.send(line[i + "started on ".len()..].trim().trim_end_matches('/').to_string());
                        sent = true;
                    }
                }
            }
        });
        let mut server = Self { child, url: String::new() };
        server.url = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .map_err(|_| anyhow::anyhow!("rclone serve webdav did not report its address within 20 s"))?;
        Ok(Some(server))
    }
}

impl Drop for WebDav {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A session with cliptta's table functions registered.
pub fn session() -> datafusion::prelude::SessionContext {
    let ctx = datafusion::prelude::SessionContext::new();
    cliptta::sql::register(&ctx);
    ctx
}

/// Runs `sql` and returns the result printed as a table.
pub async fn table(ctx: &datafusion::prelude::SessionContext, sql: &str) -> anyhow::Result<String> {
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
}
