//! [`adapt_stream`]: cliptta over any Arrow record batch stream with a binary image column,
//! without a table function or a session.

use std::sync::Arc;

use datafusion::common::{exec_err, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use tokio::sync::OnceCell;

use super::image_source::ImageSource;
use super::metrics::ClipTtaMetrics;
use super::options::ClipTtaOptions;
use super::schema::{embedding_dim, output_schema, prediction_fields};
use super::stores::prefetch_model_config;
use super::stream::ClipTtaStream;

/// Adapts a stream of record batches with a binary image column: the output has every input
/// column, then the prediction columns (see [`super::schema`]), one row per input row.
///
/// The first adaptation loads the model (blocking pool); must be polled inside a Tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread")]
/// # async fn main() -> datafusion::common::Result<()> {
/// # let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip");
/// use std::sync::Arc;
/// use arrow::array::{BinaryArray, RecordBatch};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use datafusion::physical_plan::{common::collect, memory::MemoryStream};
/// use cliptta::sql::{adapt_stream, ClipTtaOptions};
///
/// let schema = Arc::new(Schema::new(vec![Field::new("image", DataType::Binary, true)]));
/// let images = BinaryArray::from_opt_vec(vec![Some(b"not an image".as_slice()), None]);
/// let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(images)])?;
/// let input = Box::pin(MemoryStream::try_new(vec![batch], schema, None)?);
/// let options = ClipTtaOptions::new(vec!["cat".into(), "dog".into()], model);
/// let out = collect(adapt_stream(input, "image", options)?).await?;
/// assert_eq!(out[0].num_rows(), 2);
/// assert_eq!(out[0].schema().field(1).name(), "label");
/// # Ok(()) }
/// ```
pub fn adapt_stream(input: SendableRecordBatchStream, image_column: &str, options: ClipTtaOptions) -> Result<SendableRecordBatchStream> {
    let input_schema = input.schema();
    let column = input_schema.index_of(image_column)?;
    if let Err(e) = options.method_config() {
        return exec_err!("cliptta: {e}");
    }
    // A model URL's config.json, for the embedding width (no session: stores from the environment).
    prefetch_model_config(&RuntimeEnv::default(), &options)?;
    let dim = embedding_dim(&options)?;
    let schema = output_schema(&input_schema, None, &prediction_fields(&options, dim))?;
    let metrics = ClipTtaMetrics::new(&ExecutionPlanMetricsSet::new(), 0);
    let stream = ClipTtaStream::new(
        input,
        schema,
        Arc::new(options),
        ImageSource::Bytes { column },
        None,
        dim,
        metrics,
        Arc::new(OnceCell::new()),
    );
    Ok(stream.into_stream())
}
