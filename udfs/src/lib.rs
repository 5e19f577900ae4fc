//! Model-free SQL functions for [DataFusion](https://datafusion.apache.org): inspect the images
//! of an image lake and judge a labelling run, in SQL.
//!
//! | function | kind | result |
//! |---|---|---|
//! | [`image_info(bytes)`](ImageInfoUdf) | scalar | `{format, width, height, color_type}` from the header, null for non-images |
//! | [`accuracy(predicted, actual)`](Accuracy) | aggregate | fraction of equal pairs |
//! | [`auroc(score, is_positive)`](Auroc) | aggregate | area under the ROC curve, ties count 1/2 |
//! | [`fpr_at_tpr(score, is_positive, target_tpr)`](FprAtTpr) | aggregate | FPR at a TPR, e.g. FPR95 |
//! | [`otsu_threshold(score)`](OtsuThreshold) | aggregate | Otsu's threshold (256 bins) |
//! | [`ece(confidence, correct[, bins])`](Ece) | aggregate | expected calibration error (15 bins by default) |
//!
//! The aggregates skip rows with nulls, return null for an empty group (or, for the ranking
//! metrics, a group without both classes), and work with `GROUP BY` and across partitions.
//! They match scikit-learn and scikit-image; see each function for the exact definition. The
//! same metrics are available as plain Rust functions: [`accuracy()`], [`auroc()`],
//! [`fpr_at_tpr()`], [`otsu_threshold()`], [`ece()`] and [`image_info()`].
//!
//! Features: `sql` (default) builds the SQL functions on DataFusion; without it the crate is
//! only the metric kernels of [`kernels`] (no DataFusion, no Arrow), which is how the adapter
//! uses Otsu's threshold.
//!
//! Register everything with one call:
//!
//! ```
//! use datafusion::prelude::SessionContext;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> datafusion::error::Result<()> {
//! let ctx = SessionContext::new();
//! cliptta_udfs::register_all(&ctx);
//!
//! let batches = ctx
//!     .sql(
//!         "SELECT domain,
//!                 accuracy(predicted, actual) AS acc,
//!                 auroc(confidence, predicted = actual) AS auroc,
//!                 round(ece(confidence, predicted = actual, 10), 4) AS ece
//!          FROM (VALUES ('photo', 'cat', 'cat', 0.9), ('photo', 'dog', 'cat', 0.6),
//!                       ('photo', 'dog', 'dog', 0.8), ('sketch', 'cat', 'dog', 0.7),
//!                       ('sketch', 'dog', 'dog', 0.7))
//!            AS runs(domain, predicted, actual, confidence)
//!          GROUP BY domain ORDER BY domain",
//!     )
//!     .await?
//!     .collect()
//!     .await?;
//!
//! datafusion::assert_batches_eq!(
//!     [
//!         "+--------+--------------------+-------+-----+",
//!         "| domain | acc                | auroc | ece |",
//!         "+--------+--------------------+-------+-----+",
//!         "| photo  | 0.6666666666666666 | 1.0   | 0.3 |",
//!         "| sketch | 0.5                | 0.5   | 0.2 |",
//!         "+--------+--------------------+-------+-----+",
//!     ],
//!     &batches
//! );
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

#[cfg(feature = "sql")]
mod accuracy;
#[cfg(feature = "sql")]
mod auroc;
#[cfg(feature = "sql")]
mod common;
#[cfg(feature = "sql")]
mod ece;
#[cfg(feature = "sql")]
mod fpr_at_tpr;
#[cfg(feature = "sql")]
mod image_info;
pub mod kernels;
#[cfg(feature = "sql")]
mod otsu;

#[cfg(feature = "sql")]
use std::sync::Arc;

#[cfg(feature = "sql")]
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
#[cfg(feature = "sql")]
use datafusion::prelude::SessionContext;

#[cfg(feature = "sql")]
pub use accuracy::Accuracy;
#[cfg(feature = "sql")]
pub use auroc::Auroc;
#[cfg(feature = "sql")]
pub use ece::Ece;
#[cfg(feature = "sql")]
pub use fpr_at_tpr::FprAtTpr;
#[cfg(feature = "sql")]
pub use image_info::{image_info, ImageInfo, ImageInfoUdf};
// Through each kernel's file: `kernels::accuracy` would also bring the module of that name.
pub use kernels::accuracy::accuracy;
pub use kernels::auroc::auroc;
pub use kernels::ece::{ece, ECE_DEFAULT_BINS, ECE_MAX_BINS};
pub use kernels::fpr_at_tpr::fpr_at_tpr;
pub use kernels::otsu::{otsu_threshold, OTSU_BINS};
#[cfg(feature = "sql")]
pub use otsu::OtsuThreshold;

/// One of this crate's SQL functions, ready to register.
#[cfg(feature = "sql")]
#[derive(Debug, Clone)]
pub enum Udf {
    /// A row-by-row function, registered with `SessionContext::register_udf`.
    Scalar(Arc<ScalarUDF>),
    /// An aggregate, registered with `SessionContext::register_udaf`.
    Aggregate(Arc<AggregateUDF>),
}

#[cfg(feature = "sql")]
impl Udf {
    /// The SQL name of the function.
    pub fn name(&self) -> &str {
        match self {
            Udf::Scalar(udf) => udf.name(),
            Udf::Aggregate(udaf) => udaf.name(),
        }
    }
}

/// Every function of this crate, for callers that register them selectively or elsewhere
/// than in a [`SessionContext`].
#[cfg(feature = "sql")]
pub fn all_functions() -> Vec<Udf> {
    vec![
        Udf::Scalar(Arc::new(ScalarUDF::from(ImageInfoUdf::new()))),
        Udf::Aggregate(Arc::new(AggregateUDF::from(Accuracy::new()))),
        Udf::Aggregate(Arc::new(AggregateUDF::from(Auroc::new()))),
        Udf::Aggregate(Arc::new(AggregateUDF::from(FprAtTpr::new()))),
        Udf::Aggregate(Arc::new(AggregateUDF::from(OtsuThreshold::new()))),
        Udf::Aggregate(Arc::new(AggregateUDF::from(Ece::new()))),
    ]
}

/// Registers every function of this crate in `ctx`, replacing any of the same name.
#[cfg(feature = "sql")]
pub fn register_all(ctx: &SessionContext) {
    for function in all_functions() {
        match function {
            Udf::Scalar(udf) => ctx.register_udf(udf.as_ref().clone()),
            Udf::Aggregate(udaf) => ctx.register_udaf(udaf.as_ref().clone()),
        }
    }
}

#[cfg(all(test, feature = "sql"))]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique() {
        let functions = all_functions();
        let names: HashSet<&str> = functions.iter().map(Udf::name).collect();
        assert_eq!(names.len(), functions.len(), "duplicate function names");
    }

    #[test]
    fn names_are_the_documented_ones() {
        let names: Vec<String> = all_functions()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "image_info",
                "accuracy",
                "auroc",
                "fpr_at_tpr",
                "otsu_threshold",
                "ece"
            ]
        );
    }

    #[test]
    fn register_all_makes_them_callable() {
        let ctx = SessionContext::new();
        register_all(&ctx);
        for function in all_functions() {
            let state = ctx.state();
            let found = match function {
                Udf::Scalar(_) => state.scalar_functions().contains_key(function.name()),
                Udf::Aggregate(_) => state.aggregate_functions().contains_key(function.name()),
            };
            assert!(found, "{} not registered", function.name());
        }
    }
}
