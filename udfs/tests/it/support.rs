//! Helpers every udfs test module shares: a session with the UDFs registered, and running a
//! query with the SQL named in any failure.

use arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{SessionConfig, SessionContext};

/// A session with every cliptta-udfs function registered, planning `partitions` partitions.
pub fn context(partitions: usize) -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
    cliptta_udfs::register_all(&ctx);
    ctx
}

/// Plans and runs `sql`; panics with the query and the error on failure.
pub async fn collect(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("planning {sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("running {sql}: {e}"))
}

/// [`collect`], printed as a pretty table.
pub async fn table(ctx: &SessionContext, sql: &str) -> String {
    pretty_format_batches(&collect(ctx, sql).await)
        .expect("format")
        .to_string()
}
