//! The table functions, with positional key/value options:
//!
//! - `cliptta(location, key, value, ...)`: the images under an object-store location.
//! - `cliptta_table(table_name, image_column, key, value, ...)`: the images in a registered
//!   table's binary column; the table's other columns come along. The table may also be a
//!   query in parentheses ([`super::SubqueryInput`]).
//! - `cliptta_batches(checkpoint_dir)`: the per-batch diagnostics a checkpointed scan committed
//!   (`job/batches.rs` lists the columns), one row per adaptation batch of every partition.
//!
//! Values are string, number or boolean literals, or lists of strings (`['cat', 'dog']`).
//! Options may also be written `name => value` ([`super::NamedArguments`] rewrites them into
//! these pairs before the functions are called).

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use datafusion::catalog::{MemTable, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_datafusion_err, plan_err, Result, ScalarValue, TableReference};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;

use super::options::{ClipTtaOptions, OptionValue};
use super::provider::{ClipTtaProvider, ProviderSource};
use super::stores::prefetch_model_config;
use crate::source::{check_store_options, ImageLocation, ModelLocation};

/// `cliptta(location, key, value, ...)`.
#[derive(Debug, Default)]
pub struct ClipTtaFunction;

/// `cliptta_table(table_name, image_column, key, value, ...)`.
#[derive(Debug, Default)]
pub struct ClipTtaTableFunction;

/// `cliptta_batches(checkpoint_dir)`.
#[derive(Debug, Default)]
pub struct ClipTtaBatchesFunction;

impl TableFunctionImpl for ClipTtaBatchesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        const F: &str = "cliptta_batches";
        const USAGE: &str = "cliptta_batches('checkpoint_dir')";
        let exprs = args.exprs();
        if exprs.len() != 1 {
            return plan_err!("{F}: takes one argument, the checkpoint directory: {USAGE}");
        }
        let dir = string_arg(F, "the argument (checkpoint directory)", exprs.first(), USAGE)?;
        let batches = crate::job::checkpoint_batches(std::path::Path::new(&dir)).map_err(|e| plan_datafusion_err!("{F}: {e}"))?;
        let sorted = crate::job::sort_batches(&batches)?;
        Ok(Arc::new(MemTable::try_new(crate::job::batches_schema(), vec![vec![sorted]])?))
    }
}

fn literal(function: &str, what: &str, expr: &Expr) -> Result<OptionValue> {
    let value = match expr {
        Expr::Literal(v, _) => v.clone(),
        Expr::Negative(inner) => match inner.as_ref() {
            Expr::Literal(v, _) if !v.is_null() => return Ok(OptionValue::Text(format!("-{v}"))),
            _ => return plan_err!("{function}: {what} must be a literal, got `{expr}`"),
        },
        other => return plan_err!("{function}: {what} must be a literal, got `{other}`"),
    };
    match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => Ok(OptionValue::Text(s)),
        ScalarValue::List(list) if list.len() == 1 && !list.is_null(0) => {
            let items = arrow::compute::cast(&list.value(0), &DataType::Utf8)?;
            let items = items.as_string::<i32>();
            if items.null_count() > 0 {
                return plan_err!("{function}: {what} has a null list item");
            }
            Ok(OptionValue::List(items.iter().flatten().map(str::to_string).collect()))
        }
        v if v.is_null() => plan_err!("{function}: {what} is null"),
        v @ (ScalarValue::Boolean(_)
        | ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Float32(_)
        | ScalarValue::Float64(_)
        | ScalarValue::Decimal128(..)) => Ok(OptionValue::Text(v.to_string())),
        v => plan_err!("{function}: {what} has unsupported type {}", v.data_type()),
    }
}

fn string_arg(function: &str, what: &str, expr: Option<&Expr>, usage: &str) -> Result<String> {
    match expr {
        Some(Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _)) => Ok(s.clone()),
        _ => plan_err!("{function}: the {what} must be a string; usage: {usage}"),
    }
}

fn key_values(function: &str, exprs: &[Expr]) -> Result<Vec<(String, OptionValue)>> {
    let mut pairs = Vec::new();
    for pair in exprs.chunks(2) {
        let key = match literal(function, "an option key", &pair[0])? {
            OptionValue::Text(k) => k,
            OptionValue::List(_) => return plan_err!("{function}: an option key must be a string, got a list"),
        };
        let Some(value) = pair.get(1) else {
            return plan_err!("{function}: options come in key, value pairs; option `{key}` has no value");
        };
        pairs.push((key.clone(), literal(function, &format!("the value of option `{key}`"), value)?));
    }
    Ok(pairs)
}

const CLIPTTA_USAGE: &str = "cliptta('s3://bucket/images/', 'classes', 'cat,dog', ...)";
const CLIPTTA_TABLE_USAGE: &str = "cliptta_table('table', 'image_column', 'classes', 'cat,dog', ...)";

impl TableFunctionImpl for ClipTtaFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let location = string_arg("cliptta", "first argument (location)", exprs.first(), CLIPTTA_USAGE)?;
        let options = ClipTtaOptions::parse_for("cliptta", &key_values("cliptta", &exprs[1..])?)?;
        let location = match ImageLocation::parse(&location).and_then(|l| l.check_exists().map(|()| l)) {
            Ok(l) => l,
            Err(e) => return plan_err!("cliptta: {e}"),
        };
        // Each store option must apply to the images' store or the model's.
        if let Err(e) = check_store_options(location.store_url(), &options.store_options) {
            let model_url = match &options.model {
                ModelLocation::Remote(m) => Some(m.store_url().clone()),
                ModelLocation::Local(_) => None,
            };
            let applies = |o: &(String, String)| {
                check_store_options(location.store_url(), std::slice::from_ref(o)).is_ok()
                    || model_url.as_ref().is_some_and(|u| check_store_options(u, std::slice::from_ref(o)).is_ok())
            };
            if !options.store_options.iter().all(applies) {
                return plan_err!("cliptta: {e}");
            }
        }
        prefetch_model_config(args.session().runtime_env(), &options)?;
        Ok(Arc::new(ClipTtaProvider::try_new(ProviderSource::Lake(location), options)?))
    }
}

impl TableFunctionImpl for ClipTtaTableFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        const F: &str = "cliptta_table";
        let exprs = args.exprs();
        let name = string_arg(F, "first argument (table name)", exprs.first(), CLIPTTA_TABLE_USAGE)?;
        let Some(state) = args.session().as_any().downcast_ref::<SessionState>() else {
            return plan_err!("{F}: needs a SessionContext's session to look up tables");
        };
        let reference = TableReference::from(name.as_str());
        let schema = state.schema_for_ref(reference.clone())?;
        // Catalog lookups of registered tables complete immediately; the call is synchronous.
        let Some(table) = futures::executor::block_on(schema.table(reference.table()))? else {
            return plan_err!("{F}: table `{name}` not found");
        };
        Ok(Arc::new(table_provider(name, table, exprs.get(1..).unwrap_or_default(), args.session().runtime_env())?))
    }
}

/// The provider of `cliptta_table` over `table` (a registered table, or a query's result named
/// `name` in messages), given the arguments after the table: image column, then options.
pub(crate) fn table_provider(name: String, table: Arc<dyn TableProvider>, exprs: &[Expr], env: &RuntimeEnv) -> Result<ClipTtaProvider> {
    const F: &str = "cliptta_table";
    let column = string_arg(F, "second argument (image column)", exprs.first(), CLIPTTA_TABLE_USAGE)?;
    let options = ClipTtaOptions::parse_for(F, &key_values(F, exprs.get(1..).unwrap_or_default())?)?;
    let model_url = match &options.model {
        ModelLocation::Remote(m) => Some(m.store_url().clone()),
        ModelLocation::Local(_) => None,
    };
    if !options.store_options.iter().all(|o| model_url.as_ref().is_some_and(|u| check_store_options(u, std::slice::from_ref(o)).is_ok())) {
        return plan_err!("{F}: store options apply only to a model URL's store, not to tables");
    }
    prefetch_model_config(env, &options)?;
    let table_schema = table.schema();
    let Ok(image_column) = table_schema.index_of(&column) else {
        return plan_err!("{F}: table `{name}` has no column `{column}`");
    };
    let data_type = table_schema.field(image_column).data_type();
    if !matches!(data_type, DataType::Binary | DataType::LargeBinary | DataType::BinaryView) {
        return plan_err!("{F}: column `{column}` has type {data_type}, expected Binary");
    }
    ClipTtaProvider::try_new(ProviderSource::Table { name, table, image_column }, options)
}
