//! `cliptta cluster scheduler|executor`: Ballista processes with cliptta's codecs registered.
//! Without the `ballista` feature the command explains how to get it.

use crate::cli::args::ClusterCommand;
#[cfg(not(feature = "ballista"))]
use crate::cli::UsageError;

/// Runs the command until the process is stopped.
#[cfg(feature = "ballista")]
pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    use cliptta::cluster::{run_executor, run_scheduler, ExecutorSettings, SchedulerSettings};

    use crate::cli::UsageError;

    match command {
        ClusterCommand::Scheduler(a) => {
            let settings = SchedulerSettings {
                bind: a.bind,
                external_host: a.external_host,
                executor_timeout_seconds: a.executor_timeout,
                task_max_failures: a.task_max_failures,
            };
            run_scheduler(settings).await.with_context(|| format!("scheduler on {}", a.bind))
        }
        ClusterCommand::Executor(a) => {
            let (host, port) = a
                .scheduler
                .rsplit_once(':')
                .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
                .ok_or_else(|| UsageError(format!("--scheduler `{}` is not HOST:PORT", a.scheduler)))?;
            let settings = ExecutorSettings {
                scheduler_host: host,
                scheduler_port: port,
                bind_host: a.bind_host,
                external_host: a.external_host,
                flight_port: a.flight_port,
                grpc_port: a.grpc_port,
                task_slots: a.task_slots,
                work_dir: a.work_dir,
            };
            run_executor(settings).await.with_context(|| format!("executor for {}", a.scheduler))
        }
    }
}

/// Without the `ballista` feature: a usage error naming the feature.
#[cfg(not(feature = "ballista"))]
pub async fn run(_command: ClusterCommand) -> anyhow::Result<()> {
    Err(UsageError("this cliptta was built without the `ballista` feature: rebuild with `--features ballista`".into()).into())
}
