//! `name => value` arguments for the table functions:
//! `cliptta('s3://bucket/photos/', classes => 'cat,dog', method => 'tent', lr => 1e-3)`.
//!
//! DataFusion plans a table-function call from positional arguments only and rejects named
//! ones, so this relation planner rewrites each named argument of `cliptta(...)` and
//! `cliptta_table(...)` into the `'key', value` pair those functions take, and hands the call
//! back to the default planning. Positional arguments (the location; the table and column)
//! come first; positional key/value pairs may precede named ones but not follow them.

use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::planner::{RelationPlanner, RelationPlannerContext, RelationPlanning};
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, FunctionArg, FunctionArgExpr, TableFactor, Value};

/// The relation planner that turns named arguments of cliptta's table functions into
/// positional key/value pairs (registered by [`super::register`]).
#[derive(Debug, Default)]
pub struct NamedArguments;

const FUNCTIONS: [&str; 2] = ["cliptta", "cliptta_table"];

impl RelationPlanner for NamedArguments {
    fn plan_relation(&self, mut relation: TableFactor, _context: &mut dyn RelationPlannerContext) -> Result<RelationPlanning> {
        let TableFactor::Table { name, args: Some(args), .. } = &mut relation else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let function = match name.0.as_slice() {
            [part] => part.as_ident().map(|i| i.value.to_ascii_lowercase()),
            _ => None,
        };
        let Some(function) = function.filter(|f| FUNCTIONS.contains(&f.as_str())) else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        if !args.args.iter().any(|a| matches!(a, FunctionArg::Named { .. } | FunctionArg::ExprNamed { .. })) {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        }
        let mut positional = Vec::with_capacity(args.args.len() * 2);
        let mut named_seen: Option<String> = None;
        for arg in std::mem::take(&mut args.args) {
            let (key, value) = match arg {
                FunctionArg::Named { name, arg, .. } => (name.value, arg),
                FunctionArg::ExprNamed { name: SqlExpr::Identifier(name), arg, .. } => (name.value, arg),
                FunctionArg::ExprNamed { name, .. } => {
                    return plan_err!("{function}: an argument name must be an identifier, got `{name}`");
                }
                FunctionArg::Unnamed(arg) => {
                    if let Some(previous) = &named_seen {
                        return plan_err!("{function}: positional argument `{arg}` after the named argument `{previous}`; named arguments come last");
                    }
                    positional.push(FunctionArg::Unnamed(arg));
                    continue;
                }
            };
            if !matches!(value, FunctionArgExpr::Expr(_)) {
                return plan_err!("{function}: argument `{key}` must be a value, got `{value}`");
            }
            positional.push(FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::value(Value::SingleQuotedString(key.clone())))));
            positional.push(FunctionArg::Unnamed(value));
            named_seen = Some(key);
        }
        args.args = positional;
        Ok(RelationPlanning::Original(Box::new(relation)))
    }
}
