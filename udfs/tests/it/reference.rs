//! The evaluation aggregates against reference values from scikit-learn, scikit-image, SciPy
//! and NumPy (`fixtures/reference.json`, produced by `fixtures/make_reference.py`).
//!
//! Every SQL query runs over a `MemTable` split into several partitions, so each group is
//! aggregated partially per partition and the partial states are merged.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{Field, Float64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde_json::Value;

use crate::support;

const FIXTURE: &str = include_str!("../fixtures/reference.json");
const PARTITIONS: usize = 3;

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixtures/reference.json parses")
}

fn f64s(v: &Value) -> Vec<Option<f64>> {
    v.as_array()
        .expect("array")
        .iter()
        .map(Value::as_f64)
        .collect()
}

fn bools(v: &Value) -> Vec<Option<bool>> {
    v.as_array()
        .expect("array")
        .iter()
        .map(Value::as_bool)
        .collect()
}

fn expected(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Rows where every value is present, for the plain Rust functions.
fn complete<A: Copy, B: Copy>(a: &[Option<A>], b: &[Option<B>]) -> (Vec<A>, Vec<B>) {
    a.iter()
        .zip(b)
        .filter_map(|(a, b)| Some(((*a)?, (*b)?)))
        .unzip()
}

#[track_caller]
fn assert_close(actual: Option<f64>, expected: Option<f64>, what: &str) {
    match (actual, expected) {
        (Some(a), Some(e)) => {
            assert!(
                (a - e).abs() <= 1e-12 * e.abs().max(1.0),
                "{what}: got {a}, expected {e}"
            )
        }
        (a, e) => assert_eq!(a, e, "{what}"),
    }
}

fn context() -> SessionContext {
    support::context(4)
}

/// Registers `columns` as table `t`, its rows dealt into `PARTITIONS` contiguous partitions.
fn register(ctx: &SessionContext, columns: Vec<(&str, ArrayRef)>) {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("batch");
    let n = batch.num_rows();
    let chunk = n.div_ceil(PARTITIONS).max(1);
    let partitions: Vec<Vec<RecordBatch>> = (0..PARTITIONS)
        .map(|p| {
            let start = (p * chunk).min(n);
            let len = chunk.min(n - start);
            vec![batch.slice(start, len)]
        })
        .collect();
    let table = MemTable::try_new(schema, partitions).expect("mem table");
    ctx.deregister_table("t").expect("deregister");
    ctx.register_table("t", Arc::new(table)).expect("register");
}

async fn query_f64s(ctx: &SessionContext, sql: &str) -> Vec<Option<f64>> {
    let batches = support::collect(&ctx, sql).await;
    let mut out = Vec::new();
    for batch in batches {
        for column in batch.columns() {
            let column = column.as_primitive::<Float64Type>();
            out.extend(column.iter());
        }
    }
    out
}

#[tokio::test]
async fn ranking_metrics_match_scikit_learn() {
    let fixture = fixture();
    let ctx = context();
    for case in fixture["ranking"].as_array().expect("ranking cases") {
        let name = case["name"].as_str().unwrap_or("?");
        let scores = f64s(&case["scores"]);
        let labels = bools(&case["labels"]);
        let (s, l) = complete(&scores, &labels);

        let want = expected(&case["auroc"]);
        assert_close(
            cliptta_udfs::auroc(&s, &l),
            want,
            &format!("auroc fn, {name}"),
        );

        register(
            &ctx,
            vec![
                (
                    "score",
                    Arc::new(Float64Array::from(scores.clone())) as ArrayRef,
                ),
                ("label", Arc::new(BooleanArray::from(labels.clone()))),
            ],
        );
        let got = query_f64s(&ctx, "SELECT auroc(score, label) FROM t").await;
        assert_close(got[0], want, &format!("auroc sql, {name}"));

        for target in case["fpr_at_tpr"].as_array().expect("targets") {
            let t = target["target"].as_f64().expect("target");
            let want = expected(&target["expected"]);
            let what = format!("fpr_at_tpr {t}, {name}");
            assert_close(
                cliptta_udfs::fpr_at_tpr(&s, &l, t),
                want,
                &format!("{what} fn"),
            );
            let got = query_f64s(
                &ctx,
                &format!("SELECT fpr_at_tpr(score, label, {t:?}) FROM t"),
            )
            .await;
            assert_close(got[0], want, &format!("{what} sql"));
        }
    }
}

#[tokio::test]
async fn otsu_matches_scikit_image() {
    let fixture = fixture();
    let ctx = context();
    for case in fixture["otsu"].as_array().expect("otsu cases") {
        let name = case["name"].as_str().unwrap_or("?");
        let values = f64s(&case["values"]);
        let want = expected(&case["expected"]);
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        // The histogram is replicated exactly, so the bin centre must be the same double.
        assert_eq!(
            cliptta_udfs::otsu_threshold(&present),
            want,
            "otsu fn, {name}"
        );

        register(
            &ctx,
            vec![("v", Arc::new(Float64Array::from(values)) as ArrayRef)],
        );
        let got = query_f64s(&ctx, "SELECT otsu_threshold(v) FROM t").await;
        assert_eq!(got[0], want, "otsu sql, {name}");
    }
}

#[tokio::test]
async fn ece_matches_numpy() {
    let fixture = fixture();
    let ctx = context();
    for case in fixture["ece"].as_array().expect("ece cases") {
        let name = case["name"].as_str().unwrap_or("?");
        let confidences = f64s(&case["confidences"]);
        let correct = bools(&case["correct"]);
        let (c, y) = complete(&confidences, &correct);
        register(
            &ctx,
            vec![
                (
                    "c",
                    Arc::new(Float64Array::from(confidences.clone())) as ArrayRef,
                ),
                ("y", Arc::new(BooleanArray::from(correct.clone()))),
            ],
        );
        for per_bins in case["ece"].as_array().expect("bins") {
            let bins = per_bins["bins"].as_u64().expect("bins") as usize;
            let want = expected(&per_bins["expected"]);
            let what = format!("ece {bins} bins, {name}");
            assert_close(cliptta_udfs::ece(&c, &y, bins), want, &format!("{what} fn"));
            let got = query_f64s(&ctx, &format!("SELECT ece(c, y, {bins}) FROM t")).await;
            assert_close(got[0], want, &format!("{what} sql"));
            if bins == cliptta_udfs::ECE_DEFAULT_BINS {
                let got = query_f64s(&ctx, "SELECT ece(c, y) FROM t").await;
                assert_close(got[0], want, &format!("{what} sql, default bins"));
            }
        }
    }
}

#[tokio::test]
async fn accuracy_matches_scikit_learn() {
    let fixture = fixture();
    let ctx = context();
    for case in fixture["accuracy"].as_array().expect("accuracy cases") {
        let name = case["name"].as_str().unwrap_or("?");
        let want = expected(&case["expected"]);
        let to_array = |v: &Value| -> ArrayRef {
            let values = v.as_array().expect("array");
            if values.iter().any(Value::is_i64) {
                Arc::new(Int64Array::from(
                    values.iter().map(Value::as_i64).collect::<Vec<_>>(),
                ))
            } else {
                Arc::new(StringArray::from(
                    values.iter().map(Value::as_str).collect::<Vec<_>>(),
                ))
            }
        };
        let predicted = to_array(&case["predicted"]);
        let actual = to_array(&case["actual"]);
        if let (Some(p), Some(a)) = (
            predicted.as_string_opt::<i32>(),
            actual.as_string_opt::<i32>(),
        ) {
            let p: Vec<Option<&str>> = p.iter().collect();
            let a: Vec<Option<&str>> = a.iter().collect();
            let (p, a) = complete(&p, &a);
            assert_close(
                cliptta_udfs::accuracy(&p, &a),
                want,
                &format!("accuracy fn, {name}"),
            );
        }
        register(&ctx, vec![("p", predicted), ("a", actual)]);
        let got = query_f64s(&ctx, "SELECT accuracy(p, a) FROM t").await;
        assert_close(got[0], want, &format!("accuracy sql, {name}"));
    }
}

/// One table, five groups (plain, ties, nulls, one class, all null), shuffled rows dealt into
/// partitions: every metric per group must match the reference.
#[tokio::test]
async fn group_by_merges_partial_states() {
    let fixture = fixture();
    let grouped = &fixture["grouped"];
    let rows = grouped["rows"].as_array().expect("rows");
    let column = |key: &str| -> Vec<Value> { rows.iter().map(|r| r[key].clone()).collect() };
    let groups: Vec<Option<&str>> = rows.iter().map(|r| r["g"].as_str()).collect();

    let ctx = context();
    register(
        &ctx,
        vec![
            ("g", Arc::new(StringArray::from(groups)) as ArrayRef),
            (
                "score",
                Arc::new(Float64Array::from(f64s(&Value::Array(column("score"))))),
            ),
            (
                "label",
                Arc::new(BooleanArray::from(bools(&Value::Array(column("label"))))),
            ),
            (
                "confidence",
                Arc::new(Float64Array::from(f64s(&Value::Array(column(
                    "confidence",
                ))))),
            ),
            (
                "predicted",
                Arc::new(Int64Array::from(
                    column("predicted")
                        .iter()
                        .map(Value::as_i64)
                        .collect::<Vec<_>>(),
                )),
            ),
            (
                "actual",
                Arc::new(Int64Array::from(
                    column("actual")
                        .iter()
                        .map(Value::as_i64)
                        .collect::<Vec<_>>(),
                )),
            ),
        ],
    );
    let sql =
        "SELECT g, auroc(score, label), fpr_at_tpr(score, label, 0.95), otsu_threshold(score), \
               ece(confidence, predicted = actual), accuracy(predicted, actual) \
               FROM t GROUP BY g ORDER BY g";

    // The plan must really split the aggregation, or the merge path would go untested.
    let plan = support::table(&ctx, &format!("EXPLAIN {sql}")).await;
    assert!(plan.contains("mode=Partial"), "{plan}");
    assert!(
        plan.contains("mode=FinalPartitioned") || plan.contains("mode=Final"),
        "{plan}"
    );

    let batches = support::collect(&ctx, sql).await;
    let mut seen = 0;
    for batch in &batches {
        let g = batch.column(0).as_string::<i32>();
        for row in 0..batch.num_rows() {
            let group = g.value(row);
            let want = &grouped["expected"][group];
            let got = |col: usize| {
                let c = batch.column(col).as_primitive::<Float64Type>();
                c.is_valid(row).then(|| c.value(row))
            };
            assert_close(
                got(1),
                expected(&want["auroc"]),
                &format!("auroc, group {group}"),
            );
            assert_close(
                got(2),
                expected(&want["fpr95"]),
                &format!("fpr95, group {group}"),
            );
            assert_eq!(got(3), expected(&want["otsu"]), "otsu, group {group}");
            assert_close(
                got(4),
                expected(&want["ece"]),
                &format!("ece, group {group}"),
            );
            assert_close(
                got(5),
                expected(&want["accuracy"]),
                &format!("accuracy, group {group}"),
            );
            seen += 1;
        }
    }
    assert_eq!(seen, grouped["expected"].as_object().map_or(0, |o| o.len()));
}

#[test]
fn fixture_records_its_provenance() {
    let fixture = fixture();
    for package in ["numpy", "scipy", "scikit-learn", "scikit-image"] {
        assert!(
            fixture["versions"][package].is_string(),
            "{package} version missing"
        );
    }
    assert!(matches!(fixture["ranking"][0]["scores"], Value::Array(_)));
}
