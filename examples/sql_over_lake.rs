//! SQL over an image lake: label a directory (or any object-store URL) with `cliptta(...)` and
//! aggregate the predictions.
//!
//! `cargo run --example sql_over_lake -- [LOCATION] [MODEL_DIR]`; without arguments it writes a
//! few synthetic images to a temporary directory and uses the tiny test model.

use datafusion::prelude::SessionContext;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cliptta::allocator::retain_freed_memory();
    let mut args = std::env::args().skip(1);
    let tmp = tempfile::tempdir()?;
    let location = match args.next() {
        Some(l) => l,
        None => {
            for i in 0..8u8 {
                let img = image::RgbImage::from_fn(48, 40, |x, y| image::Rgb([(x as u8).wrapping_mul(i), (y as u8).wrapping_mul(3), i.wrapping_mul(40)]));
                img.save(tmp.path().join(format!("img{i}.png")))?;
            }
            tmp.path().display().to_string()
        }
    };
    let model = args.next().unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-clip").to_string());

    let ctx = SessionContext::new();
    cliptta::sql::register(&ctx);
    let sql = format!(
        "SELECT label, count(*) AS images, avg(confidence) AS mean_confidence
         FROM cliptta('{location}', 'classes', 'cat,dog,bird', 'model', '{model}', 'adapt_batch_size', 4)
         WHERE status = 'ok'
         GROUP BY label ORDER BY images DESC"
    );
    ctx.sql(&sql).await?.show().await?;
    Ok(())
}
