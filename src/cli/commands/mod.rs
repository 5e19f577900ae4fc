//! One module per subcommand.

pub mod cluster;
pub mod compare;
pub mod demo;
pub mod evaluate;
pub mod label;
pub mod report;
pub mod sql;
