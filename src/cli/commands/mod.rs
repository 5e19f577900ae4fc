//! One module per subcommand.

pub mod cluster;
pub mod demo;
pub mod label;
pub mod sql;
