//! Scale-out on Apache Ballista (feature `ballista`): the same `cliptta(...)` SQL on a scheduler
//! and any number of executors.
//!
//! - [`codec`]: the logical and physical extension codecs that ship a cliptta scan as
//!   configuration (location, options, model path + content hash, initial adapted state).
//! - [`config`]: that configuration's wire form.
//! - [`process`]: starting a scheduler or an executor in this process with the codecs
//!   registered, and a client session for `cliptta sql --cluster df://host:port`.
//!
//! Semantics on a cluster (ARCHITECTURE.md, "Scale-out"): each Ballista task runs one partition
//! of the scan and adapts its own stream (`reset = never` becomes `per_partition`, as processes
//! share no adapter); objects are assigned to partitions by a stable hash of their path
//! ([`crate::source::partition_of`]), so a rerun, a retried task or a single-process run with the
//! same `partitions` sees the same objects in the same order and gives the same predictions.
//! A warm start (`--warm-start N`, [`crate::sql::warm_start`]) adapts once on the first N images
//! and ships that state to every task.

pub mod codec;
pub mod config;
pub mod process;

pub use codec::{ClipTtaLogicalCodec, ClipTtaPhysicalCodec};
pub use process::{client_session, run_executor, run_scheduler, ExecutorSettings, SchedulerSettings};
