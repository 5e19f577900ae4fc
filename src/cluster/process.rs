//! Starting Ballista processes with cliptta's codecs and functions registered, and the client
//! session that submits queries to them.
//!
//! These are what `cliptta cluster scheduler`, `cliptta cluster executor` and
//! `cliptta sql --cluster df://host:port` run; any program embedding cliptta can call them too.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::utils::default_session_builder;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use cliptta_udfs::{all_functions, Udf};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::FunctionRegistry;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::codec::{ClipTtaLogicalCodec, ClipTtaPhysicalCodec};

fn ballista_err(e: ballista_core::error::BallistaError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// How to run a scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Address to listen on (gRPC; executors and clients connect here).
    pub bind: SocketAddr,
    /// Host name executors and clients use to reach this scheduler.
    pub external_host: String,
    /// Seconds without a heartbeat after which an executor is declared lost and its tasks are
    /// run elsewhere.
    pub executor_timeout_seconds: u64,
    /// Attempts of one task before the job fails (1: no retry).
    pub task_max_failures: usize,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 50050)),
            external_host: "localhost".into(),
            // Ballista's default is 180 s: a lost executor would stall a labelling job for three
            // minutes. Executors here heartbeat every 2 s (see ExecutorSettings).
            executor_timeout_seconds: 10,
            task_max_failures: 4,
        }
    }
}

/// Runs a Ballista scheduler until the process ends.
pub async fn run_scheduler(settings: SchedulerSettings) -> Result<()> {
    let session_builder: ballista_scheduler::scheduler_server::SessionBuilder = Arc::new(|config: SessionConfig| {
        let mut state = default_session_builder(config)?;
        for f in all_functions() {
            match f {
                Udf::Scalar(u) => {
                    state.register_udf(u)?;
                }
                Udf::Aggregate(a) => {
                    state.register_udaf(a)?;
                }
            }
        }
        Ok(state)
    });
    let config = SchedulerConfig {
        bind_host: settings.bind.ip().to_string(),
        bind_port: settings.bind.port(),
        external_host: settings.external_host.clone(),
        scheduling_policy: TaskSchedulingPolicy::PushStaged,
        executor_timeout_seconds: settings.executor_timeout_seconds,
        no_executors_grace_period_seconds: settings.executor_timeout_seconds,
        expire_dead_executor_interval_seconds: 1,
        task_max_failures: settings.task_max_failures.max(1),
        override_session_builder: Some(session_builder),
        override_logical_codec: Some(Arc::new(ClipTtaLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(ClipTtaPhysicalCodec::default())),
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(ballista_err)?;
    start_server(cluster, settings.bind, Arc::new(config)).await.map_err(ballista_err)
}

/// How to run an executor.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// Scheduler host.
    pub scheduler_host: String,
    /// Scheduler port.
    pub scheduler_port: u16,
    /// Host to bind the executor's services on.
    pub bind_host: String,
    /// Host name others use to fetch this executor's results.
    pub external_host: String,
    /// Arrow Flight port (results and shuffle data).
    pub flight_port: u16,
    /// gRPC port (task launches).
    pub grpc_port: u16,
    /// Tasks run at once. One by default: a task is a whole adapting stream whose model work
    /// already uses every core through candle's thread pool.
    pub task_slots: usize,
    /// Directory for shuffle files (a temporary directory when `None`).
    pub work_dir: Option<String>,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            scheduler_host: "localhost".into(),
            scheduler_port: 50050,
            bind_host: "127.0.0.1".into(),
            external_host: "localhost".into(),
            flight_port: 50051,
            grpc_port: 50052,
            task_slots: 1,
            work_dir: None,
        }
    }
}

/// Runs a Ballista executor until the process ends.
pub async fn run_executor(settings: ExecutorSettings) -> Result<()> {
    let mut registry = BallistaFunctionRegistry::default();
    for f in all_functions() {
        match f {
            Udf::Scalar(u) => {
                registry.scalar_functions.insert(u.name().to_string(), u);
            }
            Udf::Aggregate(a) => {
                registry.aggregate_functions.insert(a.name().to_string(), a);
            }
        }
    }
    let config = ExecutorProcessConfig {
        bind_host: settings.bind_host,
        external_host: Some(settings.external_host),
        port: settings.flight_port,
        grpc_port: settings.grpc_port,
        scheduler_host: settings.scheduler_host,
        scheduler_port: settings.scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: settings.task_slots.max(1),
        task_scheduling_policy: TaskSchedulingPolicy::PushStaged,
        work_dir: settings.work_dir,
        executor_heartbeat_interval_seconds: 2,
        override_function_registry: Some(Arc::new(registry)),
        override_logical_codec: Some(Arc::new(ClipTtaLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(ClipTtaPhysicalCodec::default())),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config)).await.map_err(ballista_err)
}

/// A session whose queries run on the scheduler at `url` (`df://host:port`), with
/// `cliptta(...)` and the evaluation functions registered and cliptta's codecs in place.
pub async fn client_session(url: &str) -> Result<SessionContext> {
    let config = SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(Arc::new(ClipTtaLogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(ClipTtaPhysicalCodec::default()));
    let state = SessionStateBuilder::new().with_config(config).with_default_features().build();
    let ctx = SessionContext::remote_with_state(url, state).await?;
    crate::sql::register(&ctx);
    cliptta_udfs::register_all(&ctx);
    Ok(ctx)
}
