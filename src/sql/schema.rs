//! Output columns of a cliptta scan: the source's columns, then the predictions.
//!
//! | column | type | |
//! |---|---|---|
//! | `label` | Utf8 | predicted class (null when the row failed) |
//! | `label_id` | Int32 | index into `classes` |
//! | `confidence` | Float32 | probability of `label` |
//! | `ood_score` | Float32 | log-MCM score (higher = more in-distribution) |
//! | `is_ood` | Boolean | open set: score at or below the batch threshold; closed set: false |
//! | `status` | Utf8 | `ok`, `fetch_error`, `decode_error`, `too_large`, `null_input`, `error` |
//! | `error` | Utf8 | what went wrong (null when ok) |
//! | `probs` | List<Float32> | with `emit_probs`: class probabilities |
//! | `embedding` | FixedSizeList<Float32> | with `emit_embedding`: unit-norm image embedding |
//!
//! A lake scan's source columns are `location` (Utf8, the object's URL) and `size` (Int64).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::{plan_err, Result};

use super::options::ClipTtaOptions;
use crate::model::ClipConfig;
use crate::source::{cache_root, model_cache_dir, ModelLocation};

/// `status` of a predicted row.
pub const STATUS_OK: &str = "ok";
/// `status` of a row whose image column is null.
pub const STATUS_NULL: &str = "null_input";

/// The source columns of a lake scan: `location`, `size`.
pub fn lake_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("location", DataType::Utf8, false), Field::new("size", DataType::Int64, false)]))
}

/// The prediction columns for these options. `embedding_dim` is needed only with
/// `emit_embedding` (see [`embedding_dim`]).
pub fn prediction_fields(options: &ClipTtaOptions, embedding_dim: Option<i32>) -> Vec<FieldRef> {
    let mut fields = vec![
        Field::new("label", DataType::Utf8, true),
        Field::new("label_id", DataType::Int32, true),
        Field::new("confidence", DataType::Float32, true),
        Field::new("ood_score", DataType::Float32, true),
        Field::new("is_ood", DataType::Boolean, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
    ];
    if options.emit_probs {
        fields.push(Field::new("probs", DataType::List(Arc::new(Field::new_list_field(DataType::Float32, false))), true));
    }
    if let (true, Some(dim)) = (options.emit_embedding, embedding_dim) {
        fields.push(Field::new(
            "embedding",
            DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Float32, false)), dim),
            true,
        ));
    }
    fields.into_iter().map(Arc::new).collect()
}

/// The embedding width (`projection_dim` of the model's config.json) when `emit_embedding` is
/// set: the one piece of the schema that needs the model, read from its small config file
/// (for a model URL, the copy in the local cache).
pub fn embedding_dim(options: &ClipTtaOptions) -> Result<Option<i32>> {
    if !options.emit_embedding {
        return Ok(None);
    }
    let path = match &options.model {
        ModelLocation::Local(dir) => dir.join("config.json"),
        // Fetched by `prefetch_model_config` when the scan was planned.
        ModelLocation::Remote(location) => model_cache_dir(&cache_root(), location).join("config.json"),
    };
    match ClipConfig::from_file(&path) {
        Ok(cfg) => Ok(Some(i32::try_from(cfg.projection_dim).unwrap_or(i32::MAX))),
        Err(e) => plan_err!("option `model`: {e}"),
    }
}

/// `input`'s fields (without the column at `drop`) followed by `appended`.
pub fn output_schema(input: &Schema, drop: Option<usize>, appended: &[FieldRef]) -> Result<SchemaRef> {
    let mut fields: Vec<FieldRef> =
        input.fields().iter().enumerate().filter(|(i, _)| Some(*i) != drop).map(|(_, f)| f.clone()).collect();
    for f in appended {
        if fields.iter().any(|g| g.name() == f.name()) {
            return plan_err!("input column `{}` clashes with a cliptta output column; rename it", f.name());
        }
        fields.push(f.clone());
    }
    Ok(Arc::new(Schema::new(fields)))
}
