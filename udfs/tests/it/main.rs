//! Integration tests of cliptta-udfs, in one binary so they link once.

mod image_info;
mod reference;
mod sql;
mod support;
