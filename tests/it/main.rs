//! Integration tests: one binary, a module per area (each extra test binary would link
//! DataFusion and candle again).

mod cli;
mod formats;
mod job;
mod layout;
#[cfg(feature = "ballista")]
mod cluster;
mod model;
mod preprocess;
mod sources;
mod sql;
mod tta;
mod support;
