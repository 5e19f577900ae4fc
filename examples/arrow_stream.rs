//! Arrow in, Arrow out: adapt a `SendableRecordBatchStream` with a binary image column and get
//! the same rows back with prediction columns appended, without SQL.
//!
//! `cargo run --example arrow_stream -- [MODEL_DIR]` (default: the tiny test model).

use std::sync::Arc;

use arrow::array::{BinaryArray, Int32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;
use datafusion::physical_plan::common::collect;
use datafusion::physical_plan::memory::MemoryStream;

fn png(seed: u8) -> anyhow::Result<Vec<u8>> {
    let img = image::RgbImage::from_fn(40, 40, |x, y| image::Rgb([(x as u8).wrapping_mul(seed), y as u8, seed.wrapping_mul(20)]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cliptta::allocator::retain_freed_memory();
    let model = std::env::args().nth(1).unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-clip").to_string());
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false), Field::new("image", DataType::Binary, true)]));
    let mut batches = Vec::new();
    for start in [0, 5] {
        let images = (start..start + 5).map(|i| png(i as u8 + 1)).collect::<anyhow::Result<Vec<_>>>()?;
        // The last image of each batch is broken: it comes back with status decode_error.
        let mut images: Vec<Option<&[u8]>> = images.iter().map(|b| Some(b.as_slice())).collect();
        images[4] = Some(b"broken".as_slice());
        let ids = Int32Array::from_iter_values(start..start + 5);
        let images = BinaryArray::from_opt_vec(images);
        batches.push(RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(images)])?);
    }
    let input = Box::pin(MemoryStream::try_new(batches, schema, None)?);

    // A directory or a model URL (s3://, gs://, az://, http(s)://).
    let model = cliptta::source::ModelLocation::parse(&model)?;
    let mut options = cliptta::sql::ClipTtaOptions::new(vec!["cat".into(), "dog".into(), "bird".into()], model);
    options.adapt_batch_size = 4;
    let output = collect(cliptta::sql::adapt_stream(input, "image", options)?).await?;
    let shown: Vec<RecordBatch> = output.iter().map(|b| b.project(&[0, 2, 4, 7, 8])).collect::<Result<_, _>>()?;
    println!("{}", pretty_format_batches(&shown)?);
    Ok(())
}
