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

use arrow::array::{ArrayRef, BooleanBuilder, FixedSizeListBuilder, Float32Builder, Int32Builder, ListBuilder, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::{plan_err, Result};

use super::options::ClipTtaOptions;
use crate::model::ClipConfig;
use crate::source::{cache_root, model_cache_dir, ModelLocation};
use crate::tta::BatchPrediction;
use crate::RowStatus;

/// One appended column (the table above, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionColumn {
    /// `label`
    Label,
    /// `label_id`
    LabelId,
    /// `confidence`
    Confidence,
    /// `ood_score`
    OodScore,
    /// `is_ood`
    IsOod,
    /// `status`
    Status,
    /// `error`
    Error,
    /// `probs` (with `emit_probs`)
    Probs,
    /// `embedding` (with `emit_embedding`), of this width
    Embedding(i32),
}

impl PredictionColumn {
    /// The columns a scan with these options appends, in order.
    pub fn for_options(options: &ClipTtaOptions, embedding_dim: Option<i32>) -> Vec<Self> {
        let mut columns = vec![Self::Label, Self::LabelId, Self::Confidence, Self::OodScore, Self::IsOod, Self::Status, Self::Error];
        if options.emit_probs {
            columns.push(Self::Probs);
        }
        if let (true, Some(dim)) = (options.emit_embedding, embedding_dim) {
            columns.push(Self::Embedding(dim));
        }
        columns
    }

    /// The column's field.
    pub fn field(self) -> Field {
        let item = || Arc::new(Field::new_list_field(DataType::Float32, false));
        match self {
            Self::Label => Field::new("label", DataType::Utf8, true),
            Self::LabelId => Field::new("label_id", DataType::Int32, true),
            Self::Confidence => Field::new("confidence", DataType::Float32, true),
            Self::OodScore => Field::new("ood_score", DataType::Float32, true),
            Self::IsOod => Field::new("is_ood", DataType::Boolean, true),
            Self::Status => Field::new("status", DataType::Utf8, false),
            Self::Error => Field::new("error", DataType::Utf8, true),
            Self::Probs => Field::new("probs", DataType::List(item()), true),
            Self::Embedding(dim) => Field::new("embedding", DataType::FixedSizeList(item(), dim), true),
        }
    }
}

/// The source columns of a lake scan: `location`, `size`.
pub fn lake_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("location", DataType::Utf8, false), Field::new("size", DataType::Int64, false)]))
}

/// The prediction columns for these options. `embedding_dim` is needed only with
/// `emit_embedding` (see [`embedding_dim`]).
pub fn prediction_fields(options: &ClipTtaOptions, embedding_dim: Option<i32>) -> Vec<FieldRef> {
    PredictionColumn::for_options(options, embedding_dim).into_iter().map(|c| Arc::new(c.field())).collect()
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

/// Builds the appended columns row by row, straight from the adapter's batch outputs (a row's
/// prediction is read from its [`BatchPrediction`] at its index; nothing is copied per row
/// beyond the column values).
pub struct PredictionBuilder<'a> {
    columns: Vec<PredictionColumn>,
    classes: &'a [String],
    label: StringBuilder,
    label_id: Int32Builder,
    confidence: Float32Builder,
    ood_score: Float32Builder,
    is_ood: BooleanBuilder,
    status: StringBuilder,
    error: StringBuilder,
    probs: ListBuilder<Float32Builder>,
    embedding: FixedSizeListBuilder<Float32Builder>,
    embedding_dim: usize,
}

impl<'a> PredictionBuilder<'a> {
    /// A builder for `columns` (see [`PredictionColumn::for_options`]) with room for `rows`.
    pub fn new(columns: Vec<PredictionColumn>, classes: &'a [String], rows: usize) -> Self {
        let item = Arc::new(Field::new_list_field(DataType::Float32, false));
        let dim = columns.iter().find_map(|c| if let PredictionColumn::Embedding(d) = c { Some(*d) } else { None }).unwrap_or(0);
        Self {
            columns,
            classes,
            label: StringBuilder::with_capacity(rows, rows * 8),
            label_id: Int32Builder::with_capacity(rows),
            confidence: Float32Builder::with_capacity(rows),
            ood_score: Float32Builder::with_capacity(rows),
            is_ood: BooleanBuilder::with_capacity(rows),
            status: StringBuilder::with_capacity(rows, rows * 4),
            error: StringBuilder::new(),
            probs: ListBuilder::new(Float32Builder::new()).with_field(item.clone()),
            embedding: FixedSizeListBuilder::new(Float32Builder::new(), dim).with_field(item),
            embedding_dim: dim as usize,
        }
    }

    /// Appends image `index` of `batch`.
    pub fn append_predicted(&mut self, batch: &BatchPrediction, index: usize) {
        let label = batch.labels[index];
        self.label.append_option(self.classes.get(label as usize));
        self.label_id.append_value(label as i32);
        self.confidence.append_value(batch.confidence[index]);
        self.ood_score.append_value(batch.ood_score[index]);
        self.is_ood.append_value(batch.is_ood[index]);
        self.status.append_value(RowStatus::Ok.as_str());
        self.error.append_null();
        match batch.probs.get(index) {
            Some(p) => {
                self.probs.values().append_slice(p);
                self.probs.append(true);
            }
            None => self.probs.append(false),
        }
        match batch.embeddings.get(index) {
            Some(e) if e.len() == self.embedding_dim => {
                self.embedding.values().append_slice(e);
                self.embedding.append(true);
            }
            _ => self.append_null_embedding(),
        }
    }

    /// Appends a row that failed with `status` and `message`.
    pub fn append_failed(&mut self, status: RowStatus, message: &str) {
        self.label.append_null();
        self.label_id.append_null();
        self.confidence.append_null();
        self.ood_score.append_null();
        self.is_ood.append_null();
        self.status.append_value(status.as_str());
        self.error.append_value(message);
        self.probs.append_null();
        self.append_null_embedding();
    }

    fn append_null_embedding(&mut self) {
        self.embedding.values().append_nulls(self.embedding_dim);
        self.embedding.append(false);
    }

    /// The columns, in [`PredictionColumn`] order.
    pub fn finish(mut self) -> Vec<ArrayRef> {
        let columns = std::mem::take(&mut self.columns);
        columns
            .into_iter()
            .map(|c| -> ArrayRef {
                match c {
                    PredictionColumn::Label => Arc::new(self.label.finish()),
                    PredictionColumn::LabelId => Arc::new(self.label_id.finish()),
                    PredictionColumn::Confidence => Arc::new(self.confidence.finish()),
                    PredictionColumn::OodScore => Arc::new(self.ood_score.finish()),
                    PredictionColumn::IsOod => Arc::new(self.is_ood.finish()),
                    PredictionColumn::Status => Arc::new(self.status.finish()),
                    PredictionColumn::Error => Arc::new(self.error.finish()),
                    PredictionColumn::Probs => Arc::new(self.probs.finish()),
                    PredictionColumn::Embedding(_) => Arc::new(self.embedding.finish()),
                }
            })
            .collect()
    }
}
