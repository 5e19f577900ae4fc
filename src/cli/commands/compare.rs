//! `cliptta compare`: the same lake labelled by several methods, side by side. Each method runs
//! as its own `cliptta label` process, so its time and peak memory are its own (a process's peak
//! never comes down, and freed memory stays with the allocator); then each output is scored in
//! SQL with the evaluation aggregates against the ground truth, when given.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context};
use cliptta::sql::{option, OptionValue};
use cliptta::tta::{Method, MethodConfig};

use crate::cli::args::CompareArgs;
use crate::cli::commands::evaluate::{evaluate, percent, register_truth};
use crate::cli::commands::sql::session;

/// One method's `label` command line: the shared options each method has, and the open set for
/// the methods that have one.
fn label_args(args: &CompareArgs, method: Method, out: &std::path::Path) -> Vec<String> {
    let mut argv = vec!["label".to_string(), args.location.clone(), "--out".into(), out.display().to_string(), "--quiet".into()];
    argv.extend(["--method".to_string(), method.to_string()]);
    let config = MethodConfig::new(method, false);
    for (key, value) in &args.options.pairs {
        let OptionValue::Text(value) = value else { continue };
        let applies = match key.as_str() {
            "open_set" => method.has_open_set(),
            "steps" | "lr" | "reset" => config.has_setting(key),
            _ => option(key).is_some() || config.has_setting(key),
        };
        if !applies {
            continue;
        }
        if option(key).is_some() {
            argv.push(format!("--{}={value}", key.replace('_', "-")));
        } else {
            argv.extend(["--set".to_string(), format!("{key}={value}")]);
        }
    }
    for (k, v) in &args.store_options {
        argv.extend(["-o".to_string(), format!("{k}={v}")]);
    }
    argv
}

/// The value after `prefix` on a line of the label summary.
fn summary_value<'a>(stdout: &'a str, prefix: &str) -> Option<&'a str> {
    stdout.lines().find_map(|l| l.strip_prefix(prefix)).map(str::trim)
}

/// Runs the command.
pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    if args.options.pairs.iter().any(|(k, _)| k == "method") {
        bail!("compare runs every method of --methods; --method does not apply");
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let ctx = session();
    let truth = match &args.labels {
        Some(csv) => Some(register_truth(&ctx, csv).await?),
        None => None,
    };
    let exe = std::env::current_exe().context("finding the cliptta executable")?;
    println!("| method | seconds | images/s | peak memory MiB | ID accuracy | AUROC | FPR95 | flagged OOD | classes predicted | rows ok/total | Parquet |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &method in &args.methods {
        let out: PathBuf = args.out.join(format!("{method}.parquet"));
        let argv = label_args(&args, method, &out);
        let started = Instant::now();
        let (program, child_argv) = (exe.clone(), argv.clone());
        let child = tokio::task::spawn_blocking(move || {
            std::process::Command::new(program).args(child_argv).stdout(Stdio::piped()).stderr(Stdio::inherit()).output()
        })
        .await?
        .with_context(|| format!("starting `cliptta {}`", argv.join(" ")))?;
        let seconds = started.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&child.stdout);
        if !child.status.success() {
            bail!("method {method}: `cliptta {}` failed ({}):\n{stdout}", argv.join(" "), child.status);
        }
        let peak = summary_value(&stdout, "peak memory:").and_then(|v| v.strip_suffix("MiB")).map_or("n/a", str::trim);
        let s = evaluate(&ctx, &out, truth).await?;
        println!(
            "| {method} | {seconds:.1} | {:.1} | {peak} | {} | {} | {} | {} | {} | {}/{} | {} |",
            s.total as f64 / seconds,
            percent(s.accuracy),
            percent(s.auroc),
            percent(s.fpr95),
            percent(s.flagged),
            s.classes,
            s.ok,
            s.total,
            out.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn each_method_gets_the_options_it_has() {
        let cli = crate::cli::args::Cli::try_parse_from([
            "cliptta", "compare", "/lake", "--methods", "zero_shot,tent,tda", "--steps", "2", "--open-set", "--set", "pos_alpha=1.5", "--adapt-batch-size", "8",
        ])
        .unwrap();
        let crate::cli::args::Command::Compare(args) = cli.command else { panic!("compare") };
        let out = std::path::Path::new("/o.parquet");
        let argv = |m: Method| label_args(&args, m, out).join(" ");
        assert_eq!(argv(Method::ZeroShot), "label /lake --out /o.parquet --quiet --method zero_shot --adapt-batch-size=8");
        assert_eq!(argv(Method::Tent), "label /lake --out /o.parquet --quiet --method tent --adapt-batch-size=8 --steps=2");
        assert_eq!(argv(Method::Tda), "label /lake --out /o.parquet --quiet --method tda --adapt-batch-size=8 --set pos_alpha=1.5");
        assert_eq!(summary_value("labelled 3 images\npeak memory: 107 MiB\n", "peak memory:"), Some("107 MiB"));
    }
}
