//! The 15 corruptions of the -C benchmarks for 28x28 grayscale images; see [`Corruption`].

mod blur;
mod digital;
mod elastic;
mod filter;
mod frost;
mod kind;
mod noise;
mod plane;
mod plasma;
mod random;
mod weather;

pub use kind::{Corruption, SEVERITIES};
