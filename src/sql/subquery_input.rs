//! A query as the input of `cliptta_table`:
//! `SELECT * FROM cliptta_table((SELECT id, image FROM photos WHERE day = '2026-11-29'), 'image', classes => 'cat,dog')`.
//!
//! DataFusion plans a table function's arguments as scalar expressions, and a scalar subquery
//! may return one column only, so the query's other columns (ids, paths) could not come along.
//! This relation planner plans the query as a derived table instead, wraps its plan in a
//! [`ViewTable`] (planned and optimised with the rest of the statement at scan time) and builds
//! the same provider as a registered table would get. It runs after [`super::NamedArguments`],
//! so named options have already become key/value pairs.

use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::common::{plan_err, DFSchema, Result};
use datafusion::datasource::provider_as_source;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::planner::{PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning};
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, FunctionArg, FunctionArgExpr, TableFactor};

use super::udtf::table_provider;

/// The relation planner for `cliptta_table((SELECT ...), 'image_column', ...)`, registered by
/// [`super::register`].
#[derive(Debug)]
pub struct SubqueryInput {
    /// The session's runtime (object stores), for the model's config when it is remote; a
    /// relation planner sees the catalog but not the session.
    runtime: Arc<RuntimeEnv>,
}

impl SubqueryInput {
    /// A planner whose remote model configs are read through `runtime`'s object stores.
    pub fn new(runtime: Arc<RuntimeEnv>) -> Self {
        Self { runtime }
    }
}

/// The name that stands for the query in messages.
const QUERY_NAME: &str = "(subquery)";

impl RelationPlanner for SubqueryInput {
    fn plan_relation(&self, relation: TableFactor, context: &mut dyn RelationPlannerContext) -> Result<RelationPlanning> {
        let TableFactor::Table { name, args: Some(args), alias, .. } = &relation else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let is_cliptta_table = matches!(name.0.as_slice(), [part] if part.as_ident().is_some_and(|i| i.value.eq_ignore_ascii_case("cliptta_table")));
        let query = match args.args.first() {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Subquery(query)))) if is_cliptta_table => query.clone(),
            _ => return Ok(RelationPlanning::Original(Box::new(relation))),
        };
        let plan = context.plan(TableFactor::Derived { lateral: false, subquery: query, alias: None, sample: None })?;
        let empty = DFSchema::empty();
        let mut exprs = Vec::with_capacity(args.args.len() - 1);
        for arg in &args.args[1..] {
            match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => exprs.push(context.sql_to_expr(e.clone(), &empty)?),
                other => return plan_err!("cliptta_table: argument `{other}` must be a value"),
            }
        }
        let table = Arc::new(ViewTable::new(plan, None));
        let provider = table_provider(QUERY_NAME.to_string(), table, &exprs, &self.runtime)?;
        let plan = LogicalPlanBuilder::scan("cliptta_table", provider_as_source(Arc::new(provider)), None)?.build()?;
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(plan, alias.clone()))))
    }
}
