// ---- src/cli/args.rs: add to `enum Command` (after `Compare`) ----

    /// Write one self-contained HTML page about a labelling run: settings, status counts,
    /// class and score histograms, per-batch adaptation curves, thumbnails, and with
    /// `--labels` accuracy, confusion matrix, AUROC/FPR95 and calibration; every number is
    /// the SQL aggregate over the run's Parquet.
    Report(ReportArgs),

// ---- src/cli/args.rs: add after `LabelArgs` ----

/// `cliptta report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run: a labels Parquet file written by `label` (`NAME.parquet`, per-batch
    /// diagnostics read from `NAME.batches.parquet` beside it), or a `label` output directory
    /// (the part files its manifests commit, diagnostics from `DIR/batches.parquet`).
    pub result: PathBuf,
    /// Ground truth: a CSV with `path` (matched as the end of each image's location), `label`
    /// and optionally `is_ood` (then AUROC and FPR95 are shown), as for `compare`.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Where the HTML page goes (written under a temporary name and renamed when complete).
    #[arg(long)]
    pub out: PathBuf,
}

// ---- src/cli/args.rs, `mod tests`: a parse check to add ----

    #[test]
    fn report_takes_a_result_labels_and_an_output() {
        let cli = Cli::try_parse_from(["cliptta", "report", "out/run.parquet", "--labels", "truth.csv", "--out", "r.html"]).unwrap();
        let Command::Report(args) = cli.command else { panic!("report") };
        assert_eq!(
            (args.result, args.labels, args.out),
            (PathBuf::from("out/run.parquet"), Some(PathBuf::from("truth.csv")), PathBuf::from("r.html"))
        );
        assert!(Cli::try_parse_from(["cliptta", "report", "out/run.parquet"]).is_err(), "--out is required");
    }

// ---- src/cli/commands/mod.rs: add in order ----

pub mod report;

// ---- src/cli/mod.rs, `run`: add to the match ----

            Command::Report(args) => commands::report::run(args).await,
