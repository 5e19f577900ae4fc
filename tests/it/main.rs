//! Integration tests: one binary, a module per area (each extra test binary would link
//! DataFusion and candle again).

mod data;
mod model;
mod tta;
mod support;
