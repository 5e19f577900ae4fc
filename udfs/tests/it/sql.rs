//! SQL behaviour of the aggregates: the documented examples, nulls, empty input, argument
//! coercion and planning errors.

use datafusion::prelude::SessionContext;

use crate::support::{self, table};

fn context() -> SessionContext {
    support::context(2)
}

async fn error(ctx: &SessionContext, sql: &str) -> String {
    let result = match ctx.sql(sql).await {
        Ok(df) => df.collect().await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => panic!("{sql}: expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Runs `sql` and compares with the `-- `-prefixed result table of a doc comment.
async fn assert_doc_example(ctx: &SessionContext, sql: &str, expected: &str) {
    let expected: Vec<&str> = expected
        .lines()
        .map(|l| l.trim().trim_start_matches("-- "))
        .collect();
    let got = table(ctx, sql).await;
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got, expected, "{sql}");
}

#[tokio::test]
async fn documented_examples_give_the_documented_output() {
    let ctx = context();
    assert_doc_example(
        &ctx,
        "SELECT accuracy(predicted, actual) AS accuracy \
         FROM (VALUES ('cat', 'cat'), ('dog', 'cat'), ('dog', 'dog'), (NULL, 'dog')) AS t(predicted, actual)",
        "-- +--------------------+
         -- | accuracy           |
         -- +--------------------+
         -- | 0.6666666666666666 |
         -- +--------------------+",
    )
    .await;
    assert_doc_example(
        &ctx,
        "SELECT auroc(score, label) AS auroc \
         FROM (VALUES (0.1, false), (0.4, false), (0.35, true), (0.8, true)) AS t(score, label)",
        "-- +-------+
         -- | auroc |
         -- +-------+
         -- | 0.75  |
         -- +-------+",
    )
    .await;
    assert_doc_example(
        &ctx,
        "SELECT fpr_at_tpr(score, label, 0.95) AS fpr95 \
         FROM (VALUES (0.9, true), (0.8, true), (0.7, false), (0.6, true), (0.6, false), (0.2, false)) \
         AS t(score, label)",
        "-- +--------------------+
         -- | fpr95              |
         -- +--------------------+
         -- | 0.6166666666666666 |
         -- +--------------------+",
    )
    .await;
    assert_doc_example(
        &ctx,
        "SELECT otsu_threshold(score) AS threshold \
         FROM (VALUES (0.1), (0.2), (0.3), (0.7), (0.8), (0.9)) AS t(score)",
        "-- +-----------+
         -- | threshold |
         -- +-----------+
         -- | 0.2984375 |
         -- +-----------+",
    )
    .await;
    assert_doc_example(
        &ctx,
        "SELECT ece(confidence, predicted = actual) AS ece, ece(confidence, predicted = actual, 1) AS ece1 \
         FROM (VALUES (0.9, 'cat', 'cat'), (0.8, 'dog', 'cat'), (0.6, 'dog', 'dog'), (0.3, 'cat', 'dog')) \
         AS t(confidence, predicted, actual)",
        "-- +-----+---------------------+
         -- | ece | ece1                |
         -- +-----+---------------------+
         -- | 0.4 | 0.15000000000000002 |
         -- +-----+---------------------+",
    )
    .await;
}

#[tokio::test]
async fn empty_input_gives_null_without_error() {
    let ctx = context();
    let got = table(
        &ctx,
        "SELECT accuracy(p, a) AS acc, auroc(s, y) AS auroc, fpr_at_tpr(s, y, 0.95) AS fpr, \
                otsu_threshold(s) AS otsu, ece(s, y) AS ece \
         FROM (VALUES ('a', 'a', 0.5, true)) AS t(p, a, s, y) WHERE false",
    )
    .await;
    assert_eq!(
        got.lines().nth(3),
        Some("|     |       |     |      |     |"),
        "{got}"
    );
}

#[tokio::test]
async fn null_rows_are_skipped_and_all_null_groups_are_null() {
    let ctx = context();
    let got = table(
        &ctx,
        "SELECT g, auroc(s, y) AS auroc, fpr_at_tpr(s, y, 0.5) AS fpr, ece(s, y, 1) AS ece, \
                accuracy(s, CAST(y AS DOUBLE)) AS acc \
         FROM (VALUES ('a', 0.9, true), ('a', NULL, false), ('a', 0.1, false), ('a', 0.2, NULL), \
                      ('b', NULL, true), ('b', NULL, NULL)) AS t(g, s, y) \
         GROUP BY g ORDER BY g",
    )
    .await;
    let expected = [
        "+---+-------+-----+-----+-----+",
        "| g | auroc | fpr | ece | acc |",
        "+---+-------+-----+-----+-----+",
        "| a | 1.0   | 0.0 | 0.0 | 0.0 |",
        "| b |       |     |     |     |",
        "+---+-------+-----+-----+-----+",
    ];
    assert_eq!(got.lines().collect::<Vec<_>>(), expected, "{got}");
}

#[tokio::test]
async fn untyped_null_arguments_give_null() {
    let ctx = context();
    let got = table(
        &ctx,
        "SELECT accuracy(NULL, NULL) AS acc, auroc(NULL, NULL) AS auroc, \
                fpr_at_tpr(NULL, NULL, 0.95) AS fpr, otsu_threshold(NULL) AS otsu, ece(NULL, NULL) AS ece",
    )
    .await;
    assert_eq!(
        got.lines().nth(3),
        Some("|     |       |     |      |     |"),
        "{got}"
    );
}

#[tokio::test]
async fn integer_labels_and_scores_are_accepted() {
    let ctx = context();
    let got = table(
        &ctx,
        "SELECT auroc(s, y) AS auroc, fpr_at_tpr(s, y, 1) AS fpr, ece(c, y) AS ece \
         FROM (VALUES (1, 0, 0.0), (2, 0, 0.0), (3, 1, 1.0), (4, 1, 1.0)) AS t(s, y, c)",
    )
    .await;
    assert_eq!(got.lines().nth(3), Some("| 1.0   | 1.0 | 0.0 |"), "{got}");
}

#[tokio::test]
async fn wrong_arguments_fail_with_the_function_name() {
    let ctx = context();
    let t = "FROM (VALUES (0.5, true, 'x')) AS t(s, y, name)";
    let cases = [
        (format!("SELECT auroc(s) {t}"), "auroc"),
        (format!("SELECT auroc(name, y) {t}"), "auroc"),
        (format!("SELECT auroc(s, name) {t}"), "auroc"),
        (format!("SELECT fpr_at_tpr(s, y) {t}"), "fpr_at_tpr"),
        (format!("SELECT fpr_at_tpr(s, y, 1.5) {t}"), "fpr_at_tpr"),
        (format!("SELECT fpr_at_tpr(s, y, s) {t}"), "fpr_at_tpr"),
        (format!("SELECT otsu_threshold(name) {t}"), "otsu_threshold"),
        (format!("SELECT otsu_threshold(s, s) {t}"), "otsu_threshold"),
        (format!("SELECT ece(s) {t}"), "ece"),
        (format!("SELECT ece(s, y, 0) {t}"), "ece"),
        (format!("SELECT ece(s, y, 2.5) {t}"), "ece"),
        (format!("SELECT ece(s, y, 1, 2) {t}"), "ece"),
        (format!("SELECT accuracy(s) {t}"), "accuracy"),
        (format!("SELECT image_info(name) {t}"), "image_info"),
        (format!("SELECT image_info() {t}"), "image_info"),
    ];
    for (sql, name) in cases {
        let message = error(&ctx, &sql).await;
        assert!(message.contains(name), "{sql}: {message}");
    }
}

#[tokio::test]
async fn ece_rejects_confidences_outside_the_unit_interval() {
    let ctx = context();
    let message = error(
        &ctx,
        "SELECT ece(c, true) FROM (VALUES (0.5), (1.5)) AS t(c)",
    )
    .await;
    assert!(
        message.contains("ece") && message.contains("1.5"),
        "{message}"
    );
}

#[tokio::test]
async fn nan_scores_are_skipped() {
    let ctx = context();
    let got = table(
        &ctx,
        "SELECT auroc(s, y) AS auroc, otsu_threshold(s) AS otsu \
         FROM (VALUES (CAST('NaN' AS DOUBLE), false), (0.9, true), (0.1, false), (0.1, false)) AS t(s, y)",
    )
    .await;
    assert!(
        got.lines()
            .nth(3)
            .is_some_and(|l| l.starts_with("| 1.0   |")),
        "{got}"
    );
}
