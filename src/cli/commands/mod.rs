//! One module per subcommand.

pub mod demo;
pub mod label;
pub mod sql;
