//! One module per subcommand.

pub mod label;
pub mod sql;
