//! The command-line interface: clap types in [`args`], one module per subcommand in
//! [`commands`].

pub mod args;
pub mod commands;

use std::fmt;

use args::{Cli, Command};

/// An error in how the command was called (bad option, bad location): exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// 2 for usage errors, 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

/// Whether the error is a closed stdout (`cliptta sql ... | head`), which is not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Runs one command on a multi-threaded Tokio runtime.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Sql(args) => commands::sql::run(args).await,
            Command::Label(args) => commands::label::run(args).await,
            Command::Compare(args) => commands::compare::run(args).await,
            Command::Report(args) => commands::report::run(args).await,
            Command::Cluster(command) => commands::cluster::run(command).await,
        }
    })
}
