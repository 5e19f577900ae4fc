//! The options of `cliptta(...)`, `cliptta_table(...)`, the CLI and the Arrow entry point,
//! each defined once in [`OPTIONS`]: name, type, default, doc and parser.
//!
//! Keys are parsed as consumed (ours), store keys (`aws_*`, `google_*`, `azure_*`,
//! `allow_http`, ... passed to the object store) or invalid; every invalid key and value is
//! reported at once, as one planning error naming the function and each option.

use std::path::{Path, PathBuf};

use datafusion::common::{plan_err, Result as DfResult};

use crate::image::DecodeLimits;
use crate::model::{DeviceSpec, DEFAULT_TEMPLATE};
use crate::source::{default_model_dir, is_store_option, Extensions, FetchOptions, ListingOrder, ModelLocation, MODEL_ENV};
pub use crate::tta::Reset;
use crate::tta::{GuardAction, GuardConfig, Method, MethodConfig};

/// One option value as it arrives: a string (SQL string or number literal, CLI text) or a list
/// (SQL `['a', 'b']`).
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    /// A scalar, as text.
    Text(String),
    /// A list of strings.
    List(Vec<String>),
}

impl From<&str> for OptionValue {
    fn from(s: &str) -> Self {
        Self::Text(s.to_string())
    }
}

impl std::fmt::Display for OptionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(s) => write!(f, "{s}"),
            Self::List(v) => write!(f, "[{}]", v.join(", ")),
        }
    }
}

/// Every setting of a cliptta scan, typed. Build it with [`ClipTtaOptions::parse`] (the SQL
/// functions and the CLI do) or [`ClipTtaOptions::new`] and field updates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClipTtaOptions {
    /// Class names, in label-id order.
    pub classes: Vec<String>,
    /// Prompt templates (`{}` is the class name); class embeddings are averaged over them.
    pub templates: Vec<String>,
    /// The checkpoint (Hugging Face layout): a local directory, or an object-store URL whose
    /// files are downloaded into the local cache (`source::fetch_model`) before loading.
    pub model: ModelLocation,
    /// The adaptation method.
    pub method: Method,
    /// Open-set CLIPTTA: OOD scores, Otsu threshold, OCE loss.
    pub open_set: bool,
    /// Images per adaptation batch (independent of DataFusion's batch size).
    pub adapt_batch_size: usize,
    /// Optimisation steps per batch (the method's default when `None`).
    pub steps: Option<usize>,
    /// Adam learning rate (the method's default when `None`).
    pub lr: Option<f64>,
    /// Reset policy.
    pub reset: Reset,
    /// The method's other hyper-parameters, by name as given (`num_shots => 16`), applied over
    /// its defaults ([`crate::tta::Method::settings`] lists each method's).
    #[serde(default)]
    pub method_settings: Vec<(String, String)>,
    /// `shuffle` (seeded) or `listing` (path order) for lake scans.
    pub shuffle: bool,
    /// Seed of the listing shuffle and the memory sampler.
    pub seed: u64,
    /// What a lake's directory or prefix lists, by file extension.
    pub extensions: Extensions,
    /// Emit the `probs` column.
    pub emit_probs: bool,
    /// Emit the `embedding` column.
    pub emit_embedding: bool,
    /// Largest encoded image accepted, in bytes.
    pub max_bytes: u64,
    /// Largest `width * height` accepted.
    pub max_pixels: u64,
    /// Largest width or height accepted.
    pub max_dimension: u32,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: DeviceSpec,
    /// Fetches (and decodes) in flight per partition.
    pub concurrency: usize,
    /// Retries of a failed fetch (errors other than not-found and permission).
    pub fetch_retries: usize,
    /// Limit of one fetch attempt, in seconds.
    pub fetch_timeout: f64,
    /// Limit of one object's fetch with its retries, in seconds; then the row is `fetch_error`.
    pub fetch_deadline: f64,
    /// Partitions of a lake scan (each adapts as its own stream).
    pub partitions: usize,
    /// Adapter state to resume from (`Adapter::save_state` file).
    pub resume: Option<PathBuf>,
    /// Where to save the adapter state when a partition's stream ends.
    pub save_state: Option<PathBuf>,
    /// Where each partition commits its output and adapter state (`job` module), and continues
    /// from when the same scan runs again.
    pub checkpoint_dir: Option<PathBuf>,
    /// Adaptation batches between commits.
    pub checkpoint_every: usize,
    /// The collapse and drift guard ([`GuardConfig`]).
    #[serde(default)]
    pub guard: GuardConfig,
    /// The lake's location as given (set by `cliptta(...)`, for checkpoint fingerprints).
    /// Not an SQL option.
    pub lake: Option<String>,
    /// Object-store keys (`aws_endpoint`, `allow_http`, ...), passed to the store builder.
    pub store_options: Vec<(String, String)>,
    /// The model's content hash ([`crate::model::ClipModel::hash_dir`]) when it must match:
    /// set when a plan is shipped to other processes, so each checks it loads the same model.
    /// Not an SQL option.
    pub model_hash: Option<String>,
}

type Apply = fn(&mut ClipTtaOptions, &OptionValue) -> Result<(), String>;
type Show = fn(&ClipTtaOptions) -> Option<String>;

/// The definition of one option: its parser and its printer over the typed field. Its
/// default is not written here: it is the field's value in [`ClipTtaOptions::new`], shown
/// through `show`.
pub struct OptionDef {
    /// The key.
    pub name: &'static str,
    /// The value type, for help texts.
    pub kind: &'static str,
    /// One line of documentation.
    pub doc: &'static str,
    apply: Apply,
    show: Show,
}

impl std::fmt::Debug for OptionDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptionDef").field("name", &self.name).field("kind", &self.kind).finish()
    }
}

impl OptionDef {
    /// Parses `value` into `options`.
    pub fn apply(&self, options: &mut ClipTtaOptions, value: &OptionValue) -> Result<(), String> {
        (self.apply)(options, value)
    }

    /// The option's value in `options`, as an option value would be written (`None` when unset).
    pub fn show(&self, options: &ClipTtaOptions) -> Option<String> {
        (self.show)(options)
    }

    /// The default, as text (`None` when the option has none of its own).
    pub fn default_text(&self) -> Option<String> {
        self.show(&ClipTtaOptions::new(Vec::new(), ModelLocation::Local(PathBuf::new())))
    }
}

fn some<T: ToString>(v: T) -> Option<String> {
    Some(v.to_string())
}

fn some_path(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

fn text<'a>(v: &'a OptionValue, what: &str) -> Result<&'a str, String> {
    match v {
        OptionValue::Text(s) => Ok(s.trim()),
        OptionValue::List(_) => Err(format!("expected {what}, got a list")),
    }
}

fn count(v: &OptionValue) -> Result<usize, String> {
    let s = text(v, "a positive integer")?;
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a positive integer")),
    }
}

fn big(v: &OptionValue) -> Result<u64, String> {
    let s = text(v, "a positive integer")?;
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a positive integer")),
    }
}

fn seconds(v: &OptionValue) -> Result<f64, String> {
    let s = text(v, "a number of seconds")?;
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 1e9 => Ok(x),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

fn number(v: &OptionValue) -> Result<f64, String> {
    let s = text(v, "a number")?;
    s.parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| format!("`{s}` is not a number"))
}

fn flag(v: &OptionValue) -> Result<bool, String> {
    match text(v, "a boolean")?.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("`{other}` is not a boolean (true or false)")),
    }
}

fn path(v: &OptionValue) -> Result<Option<PathBuf>, String> {
    let s = text(v, "a path")?;
    Ok((!s.is_empty()).then(|| PathBuf::from(s)))
}

/// A list option: a SQL list, a file with one item per line, or inline items split on `sep`.
fn list(v: &OptionValue, sep: char) -> Result<Vec<String>, String> {
    let items: Vec<String> = match v {
        OptionValue::List(items) => items.iter().map(|s| s.trim().to_string()).collect(),
        OptionValue::Text(s) => {
            let p = Path::new(s.trim());
            if !s.contains(sep) && p.is_file() {
                let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
            } else {
                s.split(sep).map(|c| c.trim().to_string()).collect()
            }
        }
    };
    if items.is_empty() || items.iter().any(String::is_empty) {
        return Err(format!("`{v}` has an empty item"));
    }
    Ok(items)
}

/// The default model: `$CLIPTTA_MODEL` (a directory or a URL), else the embedded default
/// ([`crate::source::default_model_dir`], written into the cache on first use).
pub fn default_model() -> Result<ModelLocation, String> {
    match std::env::var(MODEL_ENV) {
        Ok(p) if !p.is_empty() => ModelLocation::parse(&p).map_err(|e| format!("${MODEL_ENV}: {e}")),
        _ => default_model_dir().map(ModelLocation::Local).map_err(|e| format!("the embedded default model: {e}")),
    }
}

/// Every option, in help order.
pub const OPTIONS: &[OptionDef] = &[
    OptionDef {
        name: "classes",
        kind: "list",
        doc: "class names: a comma-separated list, a SQL list, or a file with one class per line (required)",
        apply: |o, v| {
            o.classes = list(v, ',')?;
            Ok(())
        },
        show: |o| (!o.classes.is_empty()).then(|| o.classes.join(",")),
    },
    OptionDef {
        name: "templates",
        kind: "list",
        doc: "prompt templates with `{}` for the class: separated by `|`, a SQL list, or a file with one per line",
        apply: |o, v| {
            let t = list(v, '|')?;
            if let Some(bad) = t.iter().find(|t| !t.contains("{}")) {
                return Err(format!("template `{bad}` has no `{{}}` placeholder"));
            }
            o.templates = t;
            Ok(())
        },
        show: |o| some(o.templates.join("|")),
    },
    OptionDef {
        name: "model",
        kind: "path|url",
        doc: "model in the Hugging Face layout: a directory, or an s3/gs/az/http(s)/memory URL cached locally \
              (default: $CLIPTTA_MODEL, else the embedded default model)",
        apply: |o, v| {
            let p = text(v, "a path or URL")?;
            if p.is_empty() {
                return Err("empty path".into());
            }
            let model = ModelLocation::parse(p).map_err(|e| e.to_string())?;
            // A URL is checked when the scan runs (no I/O at planning); a local directory now.
            if let ModelLocation::Local(dir) = &model {
                if !dir.join("config.json").is_file() {
                    return Err(format!("no model at `{}` (config.json not found)", dir.display()));
                }
            }
            o.model = model;
            Ok(())
        },
        show: |o| o.model.local_dir().is_none_or(|d| !d.as_os_str().is_empty()).then(|| o.model.to_string()),
    },
    OptionDef {
        name: "method",
        kind: "method",
        doc: "adaptation method (see the methods and their settings below)",
        apply: |o, v| {
            o.method = text(v, "a method name")?.parse().map_err(|e: crate::Error| match e {
                crate::Error::InvalidInput(m) => m,
                other => other.to_string(),
            })?;
            Ok(())
        },
        show: |o| some(o.method),
    },
    OptionDef {
        name: "open_set",
        kind: "boolean",
        doc: "open-set CLIPTTA: OOD scores, a per-batch Otsu threshold and the OCE loss",
        apply: |o, v| {
            o.open_set = flag(v)?;
            Ok(())
        },
        show: |o| some(o.open_set),
    },
    OptionDef {
        name: "adapt_batch_size",
        kind: "integer",
        doc: "images per adaptation batch (independent of DataFusion's batch size)",
        apply: |o, v| {
            o.adapt_batch_size = count(v)?;
            Ok(())
        },
        show: |o| some(o.adapt_batch_size),
    },
    OptionDef {
        name: "steps",
        kind: "integer",
        doc: "optimisation steps per batch (method default: 10)",
        apply: |o, v| {
            o.steps = Some(count(v)?);
            Ok(())
        },
        show: |o| o.steps.map(|s| s.to_string()),
    },
    OptionDef {
        name: "lr",
        kind: "number",
        doc: "Adam learning rate (method default: 1e-4 for cliptta, 1e-3 for tent)",
        apply: |o, v| {
            let s = text(v, "a number")?;
            match s.parse::<f64>() {
                Ok(x) if x.is_finite() && x > 0.0 => o.lr = Some(x),
                _ => return Err(format!("`{s}` is not a positive number")),
            }
            Ok(())
        },
        show: |o| o.lr.map(|l| l.to_string()),
    },
    OptionDef {
        name: "reset",
        kind: "never|per_batch|per_partition",
        doc: "when adapted weights return to the checkpoint's",
        apply: |o, v| {
            let r = text(v, "a reset policy")?;
            o.reset = Reset::ALL.into_iter().find(|p| p.as_str() == r).ok_or_else(|| format!("`{r}` is not one of never, per_batch, per_partition"))?;
            Ok(())
        },
        show: |o| some(o.reset),
    },
    OptionDef {
        name: "order",
        kind: "shuffle|listing",
        doc: "order of a lake's images: seeded shuffle, or path order",
        apply: |o, v| {
            o.shuffle = match text(v, "an order")? {
                "shuffle" => true,
                "listing" => false,
                other => return Err(format!("`{other}` is not one of shuffle, listing")),
            };
            Ok(())
        },
        show: |o| some(if o.shuffle { "shuffle" } else { "listing" }),
    },
    OptionDef {
        name: "seed",
        kind: "integer",
        doc: "seed of the shuffle and of CLIPTTA's memory sampler",
        apply: |o, v| {
            let s = text(v, "an unsigned integer")?;
            o.seed = s.parse().map_err(|_| format!("`{s}` is not an unsigned integer"))?;
            Ok(())
        },
        show: |o| some(o.seed),
    },
    OptionDef {
        name: "extensions",
        kind: "list|*",
        doc: "file extensions a lake's directory or prefix lists (any case; `*` lists every object; a glob lists what it matches)",
        apply: |o, v| {
            let joined = match v {
                OptionValue::Text(s) => s.clone(),
                OptionValue::List(items) => items.join(","),
            };
            o.extensions = joined.parse()?;
            Ok(())
        },
        show: |o| some(&o.extensions),
    },
    OptionDef {
        name: "emit_probs",
        kind: "boolean",
        doc: "add a `probs` column (class probabilities)",
        apply: |o, v| {
            o.emit_probs = flag(v)?;
            Ok(())
        },
        show: |o| some(o.emit_probs),
    },
    OptionDef {
        name: "emit_embedding",
        kind: "boolean",
        doc: "add an `embedding` column (unit-norm image embedding)",
        apply: |o, v| {
            o.emit_embedding = flag(v)?;
            Ok(())
        },
        show: |o| some(o.emit_embedding),
    },
    OptionDef {
        name: "max_bytes",
        kind: "integer",
        doc: "largest encoded image accepted; larger rows get status too_large",
        apply: |o, v| {
            o.max_bytes = big(v)?;
            Ok(())
        },
        show: |o| some(o.max_bytes),
    },
    OptionDef {
        name: "max_pixels",
        kind: "integer",
        doc: "largest width*height accepted; larger rows get status too_large",
        apply: |o, v| {
            o.max_pixels = big(v)?;
            Ok(())
        },
        show: |o| some(o.max_pixels),
    },
    OptionDef {
        name: "max_dimension",
        kind: "integer",
        doc: "largest width or height accepted; larger rows get status too_large",
        apply: |o, v| {
            let n = big(v)?;
            o.max_dimension = u32::try_from(n).map_err(|_| format!("`{n}` is too large"))?;
            Ok(())
        },
        show: |o| some(o.max_dimension),
    },
    OptionDef {
        name: "device",
        kind: "cpu|cuda|cuda:N",
        doc: "where the model runs",
        apply: |o, v| {
            o.device = text(v, "a device")?.parse().map_err(|e: crate::Error| e.to_string())?;
            Ok(())
        },
        show: |o| some(o.device),
    },
    OptionDef {
        name: "concurrency",
        kind: "integer",
        doc: "fetches and decodes in flight per partition",
        apply: |o, v| {
            o.concurrency = count(v)?;
            Ok(())
        },
        show: |o| some(o.concurrency),
    },
    OptionDef {
        name: "fetch_retries",
        kind: "integer",
        doc: "retries of a failed fetch, with exponential backoff (100 ms doubling, at most 10 s); not-found and permission errors are not retried",
        apply: |o, v| {
            let s = text(v, "an unsigned integer")?;
            o.fetch_retries = s.parse().map_err(|_| format!("`{s}` is not an unsigned integer"))?;
            Ok(())
        },
        show: |o| some(o.fetch_retries),
    },
    OptionDef {
        name: "fetch_timeout",
        kind: "seconds",
        doc: "limit of one fetch attempt",
        apply: |o, v| {
            o.fetch_timeout = seconds(v)?;
            Ok(())
        },
        show: |o| some(o.fetch_timeout),
    },
    OptionDef {
        name: "fetch_deadline",
        kind: "seconds",
        doc: "limit of one object's fetch, retries included; then its row is fetch_error (a store that stays down ends the job)",
        apply: |o, v| {
            o.fetch_deadline = seconds(v)?;
            Ok(())
        },
        show: |o| some(o.fetch_deadline),
    },
    OptionDef {
        name: "partitions",
        kind: "integer",
        doc: "partitions of a lake scan; each is one adapting stream",
        apply: |o, v| {
            o.partitions = count(v)?;
            Ok(())
        },
        show: |o| some(o.partitions),
    },
    OptionDef {
        name: "resume",
        kind: "path",
        doc: "adapter state file to start from (written by save_state)",
        apply: |o, v| {
            o.resume = path(v)?;
            Ok(())
        },
        show: |o| some_path(&o.resume),
    },
    OptionDef {
        name: "save_state",
        kind: "path",
        doc: "write the adapter state here when a partition's stream ends",
        apply: |o, v| {
            o.save_state = path(v)?;
            Ok(())
        },
        show: |o| some_path(&o.save_state),
    },
    OptionDef {
        name: "checkpoint_dir",
        kind: "path",
        doc: "commit each partition's output and adapter state here every checkpoint_every batches; the same scan run again continues from the last commit",
        apply: |o, v| {
            o.checkpoint_dir = path(v)?;
            Ok(())
        },
        show: |o| some_path(&o.checkpoint_dir),
    },
    OptionDef {
        name: "checkpoint_every",
        kind: "integer",
        doc: "adaptation batches between commits (with checkpoint_dir)",
        apply: |o, v| {
            o.checkpoint_every = count(v)?;
            Ok(())
        },
        show: |o| some(o.checkpoint_every),
    },
    OptionDef {
        name: "guard",
        kind: "off|warn|reset|stop",
        doc: "what the collapse and drift guard does when adaptation collapses onto few classes, drifts far from the checkpoint or has no finite loss",
        apply: |o, v| {
            o.guard.action = text(v, "a guard action")?.parse::<GuardAction>().map_err(|e| e.to_string())?;
            Ok(())
        },
        show: |o| some(o.guard.action),
    },
    OptionDef {
        name: "guard_window",
        kind: "integer",
        doc: "adaptation batches the guard watches together (and over which it takes the checkpoint's zero-shot classes as reference)",
        apply: |o, v| {
            o.guard.window = count(v)?;
            Ok(())
        },
        show: |o| some(o.guard.window),
    },
    OptionDef {
        name: "guard_min_class_ratio",
        kind: "number",
        doc: "class collapse: fewer classes predicted over a window than this share of the zero-shot reference's",
        apply: |o, v| {
            o.guard.min_class_ratio = number(v)?;
            Ok(())
        },
        show: |o| some(o.guard.min_class_ratio),
    },
    OptionDef {
        name: "guard_max_distance",
        kind: "number",
        doc: "drift: the LayerNorms' relative distance from the checkpoint above this",
        apply: |o, v| {
            o.guard.max_distance = number(v)?;
            Ok(())
        },
        show: |o| some(o.guard.max_distance),
    },
];

/// The options that do not change a scan's output rows, left out of a checkpoint's
/// fingerprint: they may differ between a job and its continuation.
const NOT_IN_FINGERPRINT: [&str; 10] =
    ["model", "device", "concurrency", "fetch_retries", "fetch_timeout", "fetch_deadline", "resume", "save_state", "checkpoint_dir", "checkpoint_every"];

/// Looks an option up by name.
pub fn option(name: &str) -> Option<&'static OptionDef> {
    OPTIONS.iter().find(|d| d.name == name)
}

impl ClipTtaOptions {
    /// The defaults, with `classes` and the model (a directory or a [`ModelLocation`]) given.
    /// This is where each option's default is defined (decode and fetch limits come from
    /// [`DecodeLimits::default`] and [`FetchOptions::default`]); the option table and README
    /// show these values.
    pub fn new(classes: Vec<String>, model: impl Into<ModelLocation>) -> Self {
        let limits = DecodeLimits::default();
        let fetch = FetchOptions::default();
        Self {
            classes,
            templates: vec![DEFAULT_TEMPLATE.to_string()],
            model: model.into(),
            method: Method::Cliptta,
            open_set: false,
            adapt_batch_size: 64,
            steps: None,
            lr: None,
            reset: Reset::Never,
            method_settings: Vec::new(),
            shuffle: true,
            seed: 42,
            extensions: Extensions::default(),
            emit_probs: false,
            emit_embedding: false,
            max_bytes: limits.max_bytes,
            max_pixels: limits.max_pixels,
            max_dimension: limits.max_dimension,
            device: DeviceSpec::Cpu,
            concurrency: fetch.concurrency,
            fetch_retries: fetch.retries,
            fetch_timeout: fetch.timeout.as_secs_f64(),
            fetch_deadline: fetch.deadline.as_secs_f64(),
            partitions: 1,
            resume: None,
            save_state: None,
            checkpoint_dir: None,
            checkpoint_every: 10,
            guard: GuardConfig::default(),
            lake: None,
            store_options: Vec::new(),
            model_hash: None,
        }
    }

    /// Parses key/value pairs. Returns every problem at once, each naming its option.
    pub fn parse(pairs: &[(String, OptionValue)]) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let given_model = pairs.iter().any(|(k, _)| k.trim().eq_ignore_ascii_case("model"));
        let default = if given_model {
            // Replaced below; no need to write the embedded model out.
            ModelLocation::Local(PathBuf::new())
        } else {
            default_model().unwrap_or_else(|e| {
                errors.push(format!("option `model` is required: {e}"));
                ModelLocation::Local(PathBuf::new())
            })
        };
        let mut o = Self::new(Vec::new(), default);
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in pairs {
            let key = key.trim().to_ascii_lowercase();
            if seen.contains(&key) {
                errors.push(format!("option `{key}` is given twice"));
                continue;
            }
            seen.push(key.clone());
            if let Some(def) = option(&key) {
                if let Err(e) = def.apply(&mut o, value) {
                    errors.push(format!("option `{key}`: {e}"));
                }
            } else if is_method_setting(&key) {
                match value {
                    OptionValue::Text(v) => o.method_settings.push((key, v.trim().to_string())),
                    OptionValue::List(_) => errors.push(format!("option `{key}`: expected a value, got a list")),
                }
            } else if is_store_option(&key) {
                match value {
                    OptionValue::Text(v) => o.store_options.push((key, v.clone())),
                    OptionValue::List(_) => errors.push(format!("option `{key}`: expected a string, got a list")),
                }
            } else {
                errors.push(unknown(&key));
            }
        }
        if o.classes.is_empty() && !errors.iter().any(|e| e.starts_with("option `classes`")) {
            errors.push("option `classes` is required: a comma-separated list, a SQL list, or a file with one class per line".into());
        }
        if !given_model && errors.is_empty() && o.model.local_dir().is_some_and(|d| !d.join("config.json").is_file()) {
            errors.push(format!(
                "option `model` is required: no model at `{}` (from ${MODEL_ENV}; set it to a model directory or pass one)",
                o.model
            ));
        }
        if errors.is_empty() {
            if let Err(e) = o.method_config() {
                errors.push(e);
            }
        }
        if let Err(e) = o.guard.validate() {
            errors.push(format!("option {}", e.to_string().trim_start_matches("invalid input: ")));
        }
        if o.checkpoint_dir.is_some() && o.partitions > 1 && o.reset == Reset::Never {
            errors.push(format!(
                "option `checkpoint_dir`: {} partitions sharing one adapter (reset = never) adapt in no fixed order, so a resumed run could not be exact; use reset = per_partition",
                o.partitions
            ));
        }
        if errors.is_empty() {
            Ok(o)
        } else {
            Err(errors)
        }
    }

    /// [`ClipTtaOptions::parse`] for a SQL function: one planning error naming `function`.
    pub fn parse_for(function: &str, pairs: &[(String, OptionValue)]) -> DfResult<Self> {
        match Self::parse(pairs) {
            Ok(o) => Ok(o),
            Err(errors) => plan_err!("{function}: {}", errors.join("; ")),
        }
    }

    /// The adapter's method settings: the method's defaults with `steps`, `lr`, `reset`, `seed`
    /// and the method settings given applied. A setting the method does not have is an error
    /// naming both.
    pub fn method_config(&self) -> Result<MethodConfig, String> {
        let mut m = MethodConfig::new(self.method, self.open_set);
        if self.open_set && !self.method.has_open_set() {
            let with: Vec<&str> = Method::ALL.iter().filter(|m| m.has_open_set()).map(|m| m.as_str()).collect();
            return Err(format!("option `open_set` needs a method with an open-set variant ({}), not `{}`", with.join(", "), self.method));
        }
        for (key, given) in [("steps", self.steps.is_some()), ("lr", self.lr.is_some())] {
            if given && !m.has_setting(key) {
                return Err(format!("option `{key}` does not apply to method {}", self.method));
            }
        }
        if let Some(steps) = self.steps {
            m.set_steps(steps).map_err(|e| format!("option `steps`: {e}"))?;
        }
        if let Some(lr) = self.lr {
            m.set_lr(lr).map_err(|e| format!("option `lr`: {e}"))?;
        }
        if m.has_setting("reset") {
            // Within one adapter, `per_partition` is continual.
            let reset = if self.reset == Reset::PerBatch { Reset::PerBatch } else { Reset::Never };
            m.set_reset(reset).map_err(|e| format!("option `reset`: {e}"))?;
        }
        if m.has_setting("seed") {
            m.set_seed(self.seed).map_err(|e| format!("option `seed`: {e}"))?;
        }
        for (key, value) in &self.method_settings {
            if !m.has_setting(key) {
                let of: Vec<&str> = Method::ALL.iter().filter(|m| m.settings().iter().any(|s| s.name == key)).map(|m| m.as_str()).collect();
                return Err(format!("option `{key}` is a setting of {}, not of method {}", of.join(", "), self.method));
            }
            m.set(key, value).map_err(|e| match e {
                crate::Error::InvalidInput(message) => format!("option `{key}`: {message}"),
                other => format!("option `{key}`: {other}"),
            })?;
        }
        Ok(m)
    }

    /// The method's settings that differ from its defaults, as `key=value` (for EXPLAIN).
    pub fn changed_settings(&self) -> Vec<String> {
        let Ok(m) = self.method_config() else { return Vec::new() };
        let defaults = MethodConfig::new(self.method, self.open_set);
        self.method
            .settings()
            .iter()
            .filter_map(|s| {
                let v = m.get(s.name)?;
                (defaults.get(s.name).as_ref() != Some(&v)).then(|| format!("{}={v}", s.name))
            })
            .collect()
    }

    /// The settings a checkpointed scan must keep to continue (every option that changes the
    /// output rows, and the lake); the model enters as its content hash, added by the stream.
    pub fn job_fingerprint(&self) -> std::collections::BTreeMap<String, String> {
        let mut fp: std::collections::BTreeMap<String, String> = OPTIONS
            .iter()
            .filter(|d| !NOT_IN_FINGERPRINT.contains(&d.name))
            .map(|d| (d.name.to_string(), d.show(self).unwrap_or_default()))
            .collect();
        fp.insert("lake".into(), self.lake.clone().unwrap_or_default());
        // One entry per hyper-parameter, so a refusal names the one that differs.
        fn flatten(prefix: &str, v: &serde_json::Value, out: &mut std::collections::BTreeMap<String, String>) {
            match v {
                serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| flatten(&format!("{prefix}.{k}"), v, out)),
                other => {
                    out.insert(prefix.to_string(), other.to_string().trim_matches('"').to_string());
                }
            }
        }
        if let Ok(Ok(v)) = self.method_config().map(|m| serde_json::to_value(&m)) {
            flatten("method_config", &v, &mut fp);
        }
        fp
    }

    /// Decoding limits.
    pub fn limits(&self) -> DecodeLimits {
        DecodeLimits { max_bytes: self.max_bytes, max_pixels: self.max_pixels, max_dimension: self.max_dimension }
    }

    /// Fetch settings.
    pub fn fetch_options(&self) -> FetchOptions {
        FetchOptions {
            concurrency: self.concurrency,
            retries: self.fetch_retries,
            timeout: std::time::Duration::from_secs_f64(self.fetch_timeout),
            deadline: std::time::Duration::from_secs_f64(self.fetch_deadline),
        }
    }

    /// The listing order.
    pub fn order(&self) -> ListingOrder {
        if self.shuffle {
            ListingOrder::Shuffle(self.seed)
        } else {
            ListingOrder::Listing
        }
    }

    /// The settings that change results, as `key=value` text for run records.
    pub fn describe(&self) -> Vec<(String, String)> {
        let recorded = ["classes", "templates", "method", "open_set", "adapt_batch_size", "reset", "order", "seed", "extensions"];
        let mut v: Vec<(String, String)> = recorded
            .iter()
            .filter_map(|name| option(name))
            .map(|def| (def.name.to_string(), def.show(self).unwrap_or_default()))
            .collect();
        if let Ok(m) = self.method_config() {
            v.push(("method_config".to_string(), serde_json::to_string(&m).unwrap_or_default()));
        }
        v
    }
}

/// The options as a Markdown table (option, type, default, meaning), as README shows it.
pub fn options_markdown() -> String {
    let mut out = String::from("| option | type | default | meaning |\n|---|---|---|---|\n");
    for def in OPTIONS {
        let default = def.default_text().map_or_else(|| "–".to_string(), |d| format!("`{d}`"));
        out.push_str(&format!("| `{}` | {} | {default} | {} |\n", def.name, def.kind.replace('|', " \\| "), def.doc.replace('|', "\\|")));
    }
    out.push_str(
        "| `aws_*`, `google_*`, `azure_*`, `allow_http`, ... | text | – | object-store keys, passed to the store of the images or of the model (whichever they apply to); credentials otherwise come from the usual environment variables |\n",
    );
    out.push_str("\nEach method's settings, given as options like the ones above (`num_shots => 16`; CLI: `--set num_shots=16`); the defaults are the official scripts' (closed set / open set where they differ). A setting the chosen method does not have is a planning error.\n\n");
    out.push_str("| method | setting | default | meaning |\n|---|---|---|---|\n");
    for &method in Method::ALL {
        let (closed, open) = (MethodConfig::new(method, false), MethodConfig::new(method, true));
        for s in method.settings() {
            let (c, o) = (closed.get(s.name).unwrap_or_default(), open.get(s.name).unwrap_or_default());
            let default = if method.has_open_set() && c != o { format!("`{c}` / `{o}`") } else { format!("`{c}`") };
            out.push_str(&format!("| `{method}` | `{}` | {default} | {} |\n", s.name, s.doc.replace('|', "\\|")));
        }
    }
    out
}

/// Whether some method has a setting named `key`.
fn is_method_setting(key: &str) -> bool {
    Method::ALL.iter().any(|m| m.settings().iter().any(|s| s.name == key))
}

fn unknown(key: &str) -> String {
    let settings = Method::ALL.iter().flat_map(|m| m.settings().iter().map(|s| s.name));
    let closest = OPTIONS.iter().map(|d| d.name).chain(settings).map(|name| (edit_distance(key, name), name)).min();
    match closest {
        Some((d, name)) if d <= 2 => format!("unknown option `{key}` (did you mean `{name}`?)"),
        _ => format!("unknown option `{key}`"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> String {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip").display().to_string()
    }

    fn pairs(kv: &[(&str, &str)]) -> Vec<(String, OptionValue)> {
        kv.iter().map(|(k, v)| (k.to_string(), OptionValue::from(*v))).collect()
    }

    #[test]
    fn defaults_parse_and_values_apply() {
        let model = tiny();
        let o = ClipTtaOptions::parse(&pairs(&[("classes", "cat, dog"), ("model", &model), ("lr", "1e-3"), ("aws_region", "eu-west-1")])).unwrap();
        assert_eq!(o.classes, ["cat", "dog"]);
        assert_eq!(o.templates, [DEFAULT_TEMPLATE]);
        assert_eq!((o.method.as_str(), o.adapt_batch_size, o.seed, o.shuffle, o.lr), ("cliptta", 64, 42, true, Some(1e-3)));
        assert_eq!(o.store_options, [("aws_region".to_string(), "eu-west-1".to_string())]);
        let list = vec![("classes".to_string(), OptionValue::List(vec!["a".into(), "b, c".into()])), ("model".to_string(), OptionValue::from(model.as_str()))];
        assert_eq!(ClipTtaOptions::parse(&list).unwrap().classes, ["a", "b, c"]);
    }

    #[test]
    fn classes_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("classes.txt");
        std::fs::write(&file, "cat\n\n# comment\ndog\n").unwrap();
        let o = ClipTtaOptions::parse(&pairs(&[("classes", file.to_str().unwrap()), ("model", &tiny())])).unwrap();
        assert_eq!(o.classes, ["cat", "dog"]);
    }

    #[test]
    fn every_error_is_reported_and_named() {
        let model = tiny();
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("model", &model)], "option `classes` is required: a comma-separated list, a SQL list, or a file with one class per line"),
            (vec![("classes", "a"), ("model", &model), ("clases", "b")], "unknown option `clases` (did you mean `classes`?)"),
            (vec![("classes", "a"), ("model", &model), ("method", "eata")], "option `method`: `eata` is not one of zero_shot, tent, cliptta, tda, unient, sar"),
            (vec![("classes", "a"), ("model", &model), ("method", "tent"), ("num_shots", "16")], "option `num_shots` is a setting of cliptta, not of method tent"),
            (vec![("classes", "a"), ("model", &model), ("method", "tda"), ("steps", "3")], "option `steps` does not apply to method tda"),
            (vec![("classes", "a"), ("model", &model), ("method", "tda"), ("pos_capacity", "0")], "option `pos_capacity`: `pos_capacity` = 0: a cache needs room for one entry per class"),
            (vec![("classes", "a"), ("model", &model), ("method", "tda"), ("open_set", "true")], "option `open_set` needs a method with an open-set variant (cliptta, unient), not `tda`"),
            (vec![("classes", "a"), ("model", &model), ("num_shot", "3")], "unknown option `num_shot` (did you mean `num_shots`?)"),
            (vec![("classes", "a"), ("model", &model), ("lr", "fast")], "option `lr`: `fast` is not a positive number"),
            (vec![("classes", "a"), ("model", &model), ("adapt_batch_size", "0")], "option `adapt_batch_size`: `0` is not a positive integer"),
            (vec![("classes", "a"), ("model", "/nonexistent")], "option `model`: no model at `/nonexistent` (config.json not found)"),
            (vec![("classes", "a"), ("model", &model), ("method", "zero_shot"), ("steps", "3")], "option `steps` does not apply to method zero_shot"),
            (vec![("classes", "a,,b"), ("model", &model)], "option `classes`: `a,,b` has an empty item"),
        ];
        for (kv, want) in cases {
            let errs = ClipTtaOptions::parse(&pairs(&kv)).unwrap_err();
            assert_eq!(errs, [want], "{kv:?}");
        }
        let errs = ClipTtaOptions::parse(&pairs(&[("classes", "a"), ("model", &model), ("seed", "-1"), ("reset", "sometimes")])).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    /// README's options table is [`options_markdown`]; `CLIPTTA_BLESS=1` rewrites it.
    #[test]
    fn readme_options_table_is_generated_from_the_table() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- options:begin -->\n", "<!-- options:end -->");
        let start = readme.find(begin).expect("README has the options:begin marker") + begin.len();
        let stop = readme.find(end).expect("README has the options:end marker");
        let want = options_markdown();
        if readme[start..stop] != want && std::env::var_os("CLIPTTA_BLESS").is_some() {
            std::fs::write(&path, format!("{}{want}{}", &readme[..start], &readme[stop..])).unwrap();
            return;
        }
        assert_eq!(readme[start..stop], want, "README's options table is stale: run with CLIPTTA_BLESS=1 to rewrite it");
    }

    #[test]
    fn every_shown_value_parses_back() {
        let mut o = ClipTtaOptions::new(vec!["a".into(), "b".into()], PathBuf::from(tiny()));
        o.steps = Some(3);
        o.lr = Some(2e-4);
        for def in OPTIONS {
            if let Some(text) = def.show(&o) {
                let mut back = o.clone();
                def.apply(&mut back, &OptionValue::Text(text.clone())).unwrap_or_else(|e| panic!("{}={text}: {e}", def.name));
                assert_eq!(back, o, "{}={text}", def.name);
            }
        }
    }

    #[test]
    fn method_settings_apply_and_show() {
        let o = ClipTtaOptions::parse(&pairs(&[("classes", "a,b"), ("model", &tiny()), ("num_shots", "16"), ("sample_size", "128"), ("lr", "1e-5")])).unwrap();
        let crate::tta::MethodConfig::Cliptta(c) = o.method_config().unwrap() else { panic!("cliptta") };
        assert_eq!((c.num_shots, c.sample_size, c.adam.lr), (16, 128, 1e-5));
        assert_eq!(o.changed_settings(), ["lr=0.00001", "num_shots=16", "sample_size=128"]);
        let fp = o.job_fingerprint();
        assert_eq!(fp["method_config.num_shots"], "16");
        let tda = ClipTtaOptions::parse(&pairs(&[("classes", "a,b"), ("model", &tiny()), ("method", "tda"), ("pos_alpha", "1.5")])).unwrap();
        assert_eq!(tda.method_config().unwrap().get("pos_alpha").as_deref(), Some("1.5"));
    }

    #[test]
    fn defaults_are_valid() {
        let o = ClipTtaOptions::new(vec!["a".into()], PathBuf::from(tiny()));
        assert_eq!(o.max_bytes, 64 << 20);
        assert_eq!(o.partitions, 1);
        assert_eq!(o.concurrency, 16);
        o.method_config().unwrap();
    }
}
