//! Integration tests: one binary, a module per area (each extra test binary would link
//! DataFusion and candle again).

mod browser;
mod cli;
mod formats;
mod guard;
mod hostile;
mod job;
mod layout;
#[cfg(feature = "ballista")]
mod cluster;
mod model;
mod outage;
mod preprocess;
mod report;
mod sources;
mod sql;
mod tda;
mod tta;
mod unient;
mod sar;
mod support;
