//! Command-line arguments. The adaptation options are not repeated here: [`TtaArgs`] builds one
//! `--flag` per entry of `cliptta::sql::OPTIONS`, with its doc as help.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, FromArgMatches, Parser, Subcommand, ValueEnum};
use cliptta::sql::{OptionValue, OPTIONS};

/// CLIP test-time adaptation over image lakes, as SQL.
#[derive(Debug, Parser)]
#[command(name = "cliptta", version, about)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Label the demo lake (data/lake) with the embedded default model, zero-shot and with
    /// open-set CLIPTTA, write Parquet, and print accuracy, AUROC and FPR95.
    Demo(DemoArgs),
    /// Run SQL with `cliptta(...)`, `cliptta_table(...)` and the evaluation functions registered.
    Sql(SqlArgs),
    /// Label every image under a location and write the predictions to Parquet.
    Label(LabelArgs),
    /// Label one lake with several methods and print them side by side: time, images/s, peak
    /// memory, and with `--labels` accuracy, AUROC and FPR95.
    Compare(CompareArgs),
    /// Write one self-contained HTML page about a labelling run: settings, status counts,
    /// class and score histograms, per-batch adaptation curves, thumbnails, and with
    /// `--labels` accuracy, confusion matrix, AUROC/FPR95 and calibration.
    Report(ReportArgs),
    /// Run an Apache Ballista scheduler or executor with cliptta's codecs (feature `ballista`).
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// `cliptta cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// A scheduler: plans queries from `cliptta sql --cluster` and hands tasks to executors.
    Scheduler(SchedulerArgs),
    /// An executor: runs tasks (one adapting stream each) for a scheduler.
    Executor(ExecutorArgs),
}

/// `cliptta cluster scheduler`.
#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub bind: std::net::SocketAddr,
    /// Host name executors and clients use to reach this scheduler.
    #[arg(long, default_value = "localhost")]
    pub external_host: String,
    /// Seconds without a heartbeat before an executor is declared lost and its tasks rerun.
    #[arg(long, default_value_t = 10)]
    pub executor_timeout: u64,
    /// Attempts of one task before the query fails (1: no retry).
    #[arg(long, default_value_t = 4)]
    pub task_max_failures: usize,
}

/// `cliptta cluster executor`.
#[derive(Debug, clap::Args)]
pub struct ExecutorArgs {
    /// The scheduler, as host:port.
    #[arg(long, default_value = "localhost:50050")]
    pub scheduler: String,
    /// Host to bind on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_host: String,
    /// Host name others use to fetch this executor's results.
    #[arg(long, default_value = "localhost")]
    pub external_host: String,
    /// Arrow Flight port (results and shuffle data).
    #[arg(long, default_value_t = 50051)]
    pub flight_port: u16,
    /// gRPC port (task launches).
    #[arg(long, default_value_t = 50052)]
    pub grpc_port: u16,
    /// Tasks at once (each is one adapting stream using every core for model work).
    #[arg(long, default_value_t = 1)]
    pub task_slots: usize,
    /// Directory for shuffle files.
    #[arg(long)]
    pub work_dir: Option<String>,
}

/// `cliptta demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The lake (a directory with images/ and labels.csv); default: the embedded demo lake
    /// (data/demo: Fashion-MNIST under one shift, MNIST digits as OOD).
    #[arg(long)]
    pub lake: Option<PathBuf>,
    /// The model directory; default: the embedded default model (data/models/default).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where the Parquet files go.
    #[arg(long, default_value = "target/demo")]
    pub out: PathBuf,
    /// Methods to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "zero_shot,tent,cliptta")]
    pub methods: Vec<String>,
    /// Images per adaptation batch (64: the demo lake's 1,250 images make 20 batches to adapt over).
    #[arg(long, default_value_t = 64)]
    pub adapt_batch_size: usize,
    /// Seed of the shuffled order and the memory sampler.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the model runs: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// How `sql` prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header.
    Csv,
    /// A JSON array of objects per statement.
    Json,
}

/// `cliptta sql`.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The SQL to run (statements separated by `;`).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub query: Option<String>,
    /// Read the SQL from this file.
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Run on an Apache Ballista cluster: the scheduler's URL, `df://host:port` (feature
    /// `ballista`).
    #[arg(long, value_name = "df://HOST:PORT")]
    pub cluster: Option<String>,
    /// Adapt once on the first N images of each `cliptta(...)` lake scan, then start every
    /// partition (every cluster task) from that state.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warm_start: usize,
}

/// `cliptta compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The images: a directory, a glob, or a URL, as for `label`.
    pub location: String,
    /// Methods to compare, in order.
    #[arg(long, value_delimiter = ',', default_value = "zero_shot,tent,cliptta,tda", value_parser = parse_method)]
    pub methods: Vec<cliptta::tta::Method>,
    /// Ground truth: a CSV with `path` (matched as the end of each image's location), `label`
    /// and optionally `is_ood` (then AUROC and FPR95 are reported).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Where each method's labels go, as `<method>.parquet`.
    #[arg(long, default_value = "target/compare")]
    pub out: PathBuf,
    /// Object-store settings as KEY=VALUE, as for `label`.
    #[arg(short = 'o', long = "store-option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub store_options: Vec<(String, String)>,
    /// Adaptation options, passed to every method that has them (`--open-set` to the methods
    /// with an open-set variant).
    #[command(flatten)]
    pub options: TtaArgs,
}

fn parse_method(s: &str) -> Result<cliptta::tta::Method, String> {
    s.parse().map_err(|e: cliptta::Error| e.to_string())
}

/// `cliptta label`.
#[derive(Debug, clap::Args)]
pub struct LabelArgs {
    /// The images: a directory, a glob, or a URL (s3://, gs://, az://, http(s)://, file://).
    pub location: String,
    /// Where the labels go: a `.parquet` file (written under a temporary name and renamed when
    /// complete), or a directory (ends with `/`, or has no `.parquet` extension): a checkpointed
    /// job whose part files are the labels; the same command run again continues it.
    #[arg(long)]
    pub out: PathBuf,
    /// Object-store settings as KEY=VALUE (aws_endpoint=..., allow_http=true, ...).
    #[arg(short = 'o', long = "store-option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub store_options: Vec<(String, String)>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Fail (exit 1) when the location lists no object, instead of warning.
    #[arg(long)]
    pub fail_on_empty: bool,
    /// Adaptation options.
    #[command(flatten)]
    pub options: TtaArgs,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// The options of `cliptta::sql::OPTIONS` given on the command line, as key/value pairs.
#[derive(Debug, Clone, Default)]
pub struct TtaArgs {
    /// The pairs, in table order.
    pub pairs: Vec<(String, OptionValue)>,
}

fn leak(s: String) -> &'static str {
    // Built once per process for the option table's flags.
    Box::leak(s.into_boxed_str())
}

impl Args for TtaArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        OPTIONS.iter().fold(cmd, |cmd, def| {
            let help = match def.default_text() {
                Some(default) => format!("{} [default: {default}]", def.doc),
                None => def.doc.to_string(),
            };
            let mut arg = Arg::new(def.name)
                .long(leak(def.name.replace('_', "-")))
                .value_name(leak(def.kind.to_ascii_uppercase()))
                .help(leak(help))
                .help_heading("Adaptation options");
            if def.kind == "boolean" {
                arg = arg.num_args(0..=1).default_missing_value("true");
            }
            cmd.arg(arg)
        })
        .arg(
            Arg::new("set")
                .long("set")
                .value_name("SETTING=VALUE")
                .action(clap::ArgAction::Append)
                .value_parser(parse_key_value)
                .help("a setting of the method (num_shots=16, pos_alpha=1.5, ...; README lists each method's)")
                .help_heading("Adaptation options"),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for TtaArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut pairs: Vec<(String, OptionValue)> = OPTIONS
            .iter()
            .filter(|def| matches.value_source(def.name) == Some(ValueSource::CommandLine))
            .filter_map(|def| matches.get_one::<String>(def.name).map(|v| (def.name.to_string(), OptionValue::Text(v.clone()))))
            .collect();
        if let Some(settings) = matches.get_many::<(String, String)>("set") {
            pairs.extend(settings.map(|(k, v)| (k.clone(), OptionValue::Text(v.clone()))));
        }
        Ok(Self { pairs })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn options_become_flags() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["cliptta", "label", "/data", "--out", "x.parquet", "--classes", "a,b", "--emit-probs", "--adapt-batch-size", "8", "-o", "allow_http=true"]).unwrap();
        let Command::Label(args) = cli.command else { panic!("label") };
        assert_eq!(
            args.options.pairs,
            [("classes".to_string(), OptionValue::from("a,b")), ("adapt_batch_size".to_string(), OptionValue::from("8")), ("emit_probs".to_string(), OptionValue::from("true"))]
        );
        assert_eq!(args.store_options, [("allow_http".to_string(), "true".to_string())]);
    }
}

/// `cliptta report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run: a labels Parquet file written by `label` (`NAME.parquet`, per-batch
    /// diagnostics read from `NAME.batches.parquet` beside it), or a `label` output directory.
    pub result: PathBuf,
    /// Ground truth: a CSV with `path`, `label` and optionally `is_ood`, as for `compare`.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Where the HTML page goes (written under a temporary name and renamed when complete).
    #[arg(long)]
    pub out: PathBuf,
}
