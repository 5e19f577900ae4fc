//! Scores a labelled Parquet file in SQL with the evaluation aggregates, against a ground-truth
//! CSV when one is given: shared by `demo` and `compare`, so both report the same numbers as
//! the aggregates a user would run.

use std::path::Path;

use anyhow::Context;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use datafusion::prelude::{CsvReadOptions, SessionContext};

/// The ground truth registered as table `labels`: `path` (matched as a suffix of each row's
/// location), `label`, and optionally `is_ood`.
#[derive(Debug, Clone, Copy)]
pub struct Truth {
    /// Whether the CSV has an `is_ood` column.
    pub has_ood: bool,
}

/// Registers `csv` as table `labels`.
pub async fn register_truth(ctx: &SessionContext, csv: &Path) -> anyhow::Result<Truth> {
    let path = csv.to_str().context("non-UTF-8 path")?;
    ctx.register_csv("labels", path, CsvReadOptions::new().has_header(true))
        .await
        .with_context(|| format!("reading {}", csv.display()))?;
    let schema = ctx.table("labels").await?.schema().clone();
    for column in ["path", "label"] {
        anyhow::ensure!(schema.field_with_unqualified_name(column).is_ok(), "{} has no `{column}` column", csv.display());
    }
    Ok(Truth { has_ood: schema.field_with_unqualified_name("is_ood").is_ok() })
}

/// What one run scored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    /// Rows in the file.
    pub total: i64,
    /// Rows with status `ok`.
    pub ok: i64,
    /// Distinct labels predicted.
    pub classes: i64,
    /// Share of `ok` rows flagged OOD.
    pub flagged: Option<f64>,
    /// Accuracy on in-distribution images (needs the truth).
    pub accuracy: Option<f64>,
    /// AUROC of `ood_score`, ID positive (needs `is_ood` in the truth).
    pub auroc: Option<f64>,
    /// FPR at 95% TPR (needs `is_ood`).
    pub fpr95: Option<f64>,
}

/// A percentage cell, `n/a` when unknown.
pub fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{:.2}%", 100.0 * v))
}

/// A path as an SQL string literal's content.
pub fn sql_path(p: &Path) -> String {
    sql_text(&p.display().to_string())
}

/// `s` as the inside of a single-quoted SQL string.
pub fn sql_text(s: &str) -> String {
    s.replace('\'', "''")
}

/// Scores `parquet` (written by `label`, `demo` or a `COPY`), against `truth` when given. Every
/// row counts in `total`; rows without a truth entry count in no accuracy or AUROC.
pub async fn evaluate(ctx: &SessionContext, parquet: &Path, truth: Option<Truth>) -> anyhow::Result<Scores> {
    let file = sql_path(parquet);
    let common = "count(*) AS total, \
                  CAST(sum(CASE WHEN p.status = 'ok' THEN 1 ELSE 0 END) AS BIGINT) AS ok, \
                  count(DISTINCT p.label) AS classes, \
                  avg(CASE WHEN p.status = 'ok' THEN CASE WHEN p.is_ood THEN 1.0 ELSE 0.0 END END) AS flagged";
    let sql = match truth {
        None => format!("SELECT {common} FROM '{file}' p"),
        Some(Truth { has_ood: true }) => format!(
            "SELECT {common}, \
                    accuracy(CASE WHEN NOT l.is_ood THEN p.label END, CASE WHEN NOT l.is_ood THEN l.label END) AS acc, \
                    auroc(p.ood_score, NOT l.is_ood) AS auroc, \
                    fpr_at_tpr(p.ood_score, NOT l.is_ood, 0.95) AS fpr95 \
             FROM '{file}' p LEFT JOIN labels l ON p.location LIKE concat('%/', l.path)"
        ),
        Some(Truth { has_ood: false }) => format!(
            "SELECT {common}, accuracy(p.label, l.label) AS acc \
             FROM '{file}' p LEFT JOIN labels l ON p.location LIKE concat('%/', l.path)"
        ),
    };
    let batches = ctx.sql(&sql).await?.collect().await.with_context(|| format!("scoring {}", parquet.display()))?;
    let batch: &RecordBatch = batches.first().context("the evaluation query returned nothing")?;
    let int = |name: &str| batch.column_by_name(name).and_then(|c| c.as_primitive_opt::<Int64Type>()).map_or(0, |a| a.value(0));
    let float = |name: &str| {
        batch.column_by_name(name).and_then(|c| c.as_primitive_opt::<Float64Type>()).and_then(|a| (!a.is_null(0)).then(|| a.value(0)))
    };
    Ok(Scores {
        total: int("total"),
        ok: int("ok"),
        classes: int("classes"),
        flagged: float("flagged"),
        accuracy: float("acc"),
        auroc: float("auroc"),
        fpr95: float("fpr95"),
    })
}
