//! `cliptta sql`: run statements and print their results.

use std::io::Write;

use anyhow::Context;
use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;

use crate::cli::args::{OutputFormat, SqlArgs};
use crate::cli::UsageError;

/// A session with cliptta's table functions and the evaluation UDFs, where files can be
/// queried by path (`SELECT * FROM 'out.parquet'`).
pub fn session() -> SessionContext {
    let ctx = SessionContext::new().enable_url_table();
    cliptta::sql::register(&ctx);
    cliptta_udfs::register_all(&ctx);
    ctx
}

/// Splits a script on `;` outside quotes and comments.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut single, mut double, mut comment) = (false, false, false);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if comment {
            if c == '\n' {
                comment = false;
                cur.push(c);
            }
            continue;
        }
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '-' if !single && !double && chars.peek() == Some(&'-') => {
                comment = true;
                continue;
            }
            ';' if !single && !double => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

fn print(batches: &[RecordBatch], format: OutputFormat) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match format {
        OutputFormat::Table => writeln!(stdout, "{}", arrow::util::pretty::pretty_format_batches(batches)?)?,
        OutputFormat::Csv => {
            let mut writer = arrow::csv::Writer::new(&mut stdout);
            for b in batches {
                writer.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut stdout);
            writer.write_batches(&batches.iter().collect::<Vec<_>>())?;
            writer.finish()?;
            writeln!(stdout)?;
        }
    }
    stdout.flush()?;
    Ok(())
}

/// Runs the command.
pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let sql = match (&args.query, &args.file) {
        (Some(q), _) => q.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| UsageError(format!("cannot read {}: {e}", f.display())))?,
        (None, None) => return Err(UsageError("give a query or -f FILE".into()).into()),
    };
    let ctx = match &args.cluster {
        Some(url) => cluster_session(url).await?,
        None => session(),
    };
    // Warm-start states live until the statement's plan has been shipped and run.
    let warm_dir = std::env::temp_dir().join(format!("cliptta-warm-{}", std::process::id()));
    let result = run_statements(&ctx, &sql, &args, &warm_dir).await;
    if warm_dir.exists() {
        let _ = std::fs::remove_dir_all(&warm_dir);
    }
    result
}

async fn run_statements(ctx: &SessionContext, sql: &str, args: &SqlArgs, warm_dir: &std::path::Path) -> anyhow::Result<()> {
    for statement in statements(sql) {
        let df = ctx.sql(&statement).await.with_context(|| format!("planning `{statement}`"))?;
        let df = if args.warm_start > 0 {
            let plan = cliptta::sql::warm_start(ctx, df.logical_plan().clone(), args.warm_start, warm_dir)
                .await
                .with_context(|| format!("warm start on the first {} images", args.warm_start))?;
            ctx.execute_logical_plan(plan).await.with_context(|| format!("planning `{statement}`"))?
        } else {
            df
        };
        let batches = df.collect().await.with_context(|| format!("running `{statement}`"))?;
        if batches.iter().any(|b| b.num_columns() > 0) {
            print(&batches, args.format)?;
        }
    }
    Ok(())
}

/// A session on the Ballista scheduler at `url`.
#[cfg(feature = "ballista")]
async fn cluster_session(url: &str) -> anyhow::Result<SessionContext> {
    cliptta::cluster::client_session(url).await.with_context(|| format!("connecting to {url}"))
}

/// Without the `ballista` feature: a usage error naming the feature.
#[cfg(not(feature = "ballista"))]
async fn cluster_session(_url: &str) -> anyhow::Result<SessionContext> {
    Err(UsageError("--cluster needs a cliptta built with the `ballista` feature (`--features ballista`)".into()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements() {
        let s = statements("SELECT 'a;b'; -- comment; here\nSELECT 2;\n\n");
        assert_eq!(s, ["SELECT 'a;b'", "SELECT 2"]);
    }
}
