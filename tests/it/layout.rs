//! The library's layout is its architecture: no import circle between its files, layers that
//! depend one way (`model`, `image` → `tta` → `source` → `job` → `sql` → `cluster`), and no DataFusion
//! in the model and adaptation layers. Read from the source text, so a change that breaks a rule
//! fails here with the files named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library's modules: file module path (`sql::exec`, `` for lib.rs) → source text, without
/// unit tests (`#[cfg(test)]` to the end of the file) and comments.
fn modules() -> BTreeMap<String, (PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(&src).unwrap().to_path_buf();
            // The binary (main.rs, cli/) is its own crate over the library.
            if rel.starts_with("cli") || rel == Path::new("main.rs") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let mut segments: Vec<String> = rel.iter().map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
            if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
                segments.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code: String = text
                .lines()
                .take_while(|l| !l.starts_with("#[cfg(test)]") && !l.starts_with("#[cfg(all(test"))
                .map(|l| if l.trim_start().starts_with("//") { "\n".to_string() } else { format!("{l}\n") })
                .collect();
            out.insert(segments.join("::"), (rel, code));
        }
    }
    out
}

fn ident_end(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len())
}

/// Every `crate::…` / `super::…` path in `code`, as absolute segments (groups `{a, b::C}` expanded).
fn paths(module: &str, code: &str) -> Vec<Vec<String>> {
    let own: Vec<String> = if module.is_empty() { vec![] } else { module.split("::").map(str::to_string).collect() };
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(|c: char| c == 'c' || c == 's') {
        let at = &rest[i..];
        let boundary = i == 0 || !rest[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let (mut base, mut tail) = if boundary && at.starts_with("crate::") {
            (vec![], &at[7..])
        } else if boundary && at.starts_with("super::") {
            // Module paths name files (`sql::exec` is sql/exec.rs, `sql` is sql/mod.rs), so
            // `super` is always the path less its last segment.
            let mut base = own.clone();
            let mut tail = at;
            while let Some(t) = tail.strip_prefix("super::") {
                base.pop();
                tail = t;
            }
            (base, tail)
        } else {
            rest = &rest[i + 1..];
            continue;
        };
        let consumed = at.len() - tail.len();
        collect(&mut base, &mut tail, &mut out);
        rest = &rest[i + consumed.max(1)..];
    }
    out
}

fn collect(base: &mut Vec<String>, tail: &mut &str, out: &mut Vec<Vec<String>>) {
    loop {
        if let Some(group) = tail.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut start = 0;
            let mut depth = 0;
            let inner = &group[..end];
            for (i, c) in inner.char_indices().chain(std::iter::once((inner.len(), ','))) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let mut item = inner[start..i].trim();
                        let mut b = base.clone();
                        collect(&mut b, &mut item, out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let n = ident_end(tail);
        if n == 0 {
            out.push(base.clone());
            return;
        }
        base.push(tail[..n].to_string());
        *tail = &tail[n..];
        match tail.strip_prefix("::") {
            Some(t) => *tail = t,
            None => {
                out.push(base.clone());
                return;
            }
        }
    }
}

/// `pub use child::X` / `pub(crate) use child::{X, Y}` of each module: item → child module.
fn reexports(modules: &BTreeMap<String, (PathBuf, String)>) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for (module, (_, code)) in modules {
        for line in code.split(';') {
            let line = line.trim();
            let Some(body) = line.strip_prefix("pub use ").or_else(|| line.strip_prefix("pub(crate) use ")) else { continue };
            let n = ident_end(body);
            let child = &body[..n];
            let full = if module.is_empty() { child.to_string() } else { format!("{module}::{child}") };
            if !modules.contains_key(&full) {
                continue;
            }
            let items = body[n..].trim_start_matches("::").trim_matches(|c| c == '{' || c == '}');
            for item in items.split(',') {
                let last = item.trim().rsplit("::").next().unwrap_or("").split(" as ").last().unwrap_or("").trim().to_string();
                if !last.is_empty() {
                    out.insert((module.clone(), last), full.clone());
                }
            }
        }
    }
    out
}

/// The file a path points into: its longest module prefix, followed through re-exports.
fn resolve(segments: &[String], modules: &BTreeMap<String, (PathBuf, String)>, reexports: &BTreeMap<(String, String), String>) -> Option<String> {
    let mut best = None;
    for n in (0..=segments.len()).rev() {
        let candidate = segments[..n].join("::");
        if modules.contains_key(&candidate) {
            best = Some((candidate, n));
            break;
        }
    }
    let (mut module, n) = best?;
    let mut next = segments.get(n).cloned();
    while let Some(item) = next.take() {
        if let Some(child) = reexports.get(&(module.clone(), item.clone())) {
            module = child.clone();
            next = Some(item);
            if module.is_empty() {
                break;
            }
        }
    }
    Some(module)
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let reexports = reexports(&modules);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, (rel, code)) in &modules {
        let is_dir = rel.ends_with("mod.rs") || rel.ends_with("lib.rs");
        let set = edges.entry(module.clone()).or_default();
        for p in paths(module, code) {
            if let Some(target) = resolve(&p, &modules, &reexports) {
                // A directory module re-exporting its own files is a namespace, not a dependency.
                let own_child = is_dir && (module.is_empty() || target.starts_with(&format!("{module}::")));
                if target != *module && !own_child && !target.is_empty() {
                    set.insert(target);
                }
            }
        }
    }
    edges
}

#[test]
fn the_parser_sees_known_imports() {
    let g = graph();
    assert!(g["sql::exec"].contains("sql::stream"), "{:?}", g["sql::exec"]);
    assert!(g["sql::provider"].contains("sql::exec"), "{:?}", g["sql::provider"]);
    // Through `crate::Error` (re-exported by lib.rs) and `use super::{ClipConfig, ...}`.
    assert!(g["sql::loader"].contains("row_status"), "{:?}", g["sql::loader"]);
    assert!(g["model::training"].contains("model::config"), "{:?}", g["model::training"]);
    assert!(g["tta::adapter"].iter().any(|m| m.starts_with("model")), "{:?}", g["tta::adapter"]);
}

#[test]
fn no_import_circle_between_files() {
    let g = graph();
    // Depth-first search with colours; the first back edge gives the circle.
    fn visit(n: &str, g: &BTreeMap<String, BTreeSet<String>>, state: &mut BTreeMap<String, u8>, stack: &mut Vec<String>) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                0 => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
                1 => {
                    let start = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut circle = stack[start..].to_vec();
                    circle.push(m.clone());
                    return Some(circle);
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(circle) = visit(n, &g, &mut state, &mut Vec::new()) {
                panic!("import circle: {}", circle.join(" -> "));
            }
        }
    }
}

#[test]
fn layers_depend_one_way() {
    // Lower rank may not import higher rank; the crate-wide files (error, row_status,
    // allocator) sit below everything.
    let rank = |m: &str| match m.split("::").next().unwrap_or("") {
        "error" | "row_status" | "allocator" => 0,
        "model" => 1,
        "image" => 2,
        "tta" => 3,
        "source" => 4,
        "job" => 5,
        "sql" => 6,
        "cluster" => 7,
        other => panic!("module `{other}` has no layer in this test: add it"),
    };
    let mut wrong = Vec::new();
    for (from, targets) in graph() {
        if from.is_empty() {
            continue;
        }
        for to in targets {
            if rank(&to) > rank(&from) {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers: {wrong:?}");
}

#[test]
fn model_and_tta_do_not_use_datafusion() {
    let mut wrong = Vec::new();
    for (module, (rel, code)) in modules() {
        if !(module.starts_with("model") || module.starts_with("tta") || module.starts_with("image")) {
            continue;
        }
        for (i, line) in code.lines().enumerate() {
            let udf_sql = line.contains("cliptta_udfs::") && !line.contains("cliptta_udfs::kernels::");
            if line.contains("datafusion") || udf_sql || line.contains("object_store") {
                wrong.push(format!("src/{}:{}: {}", rel.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(wrong.is_empty(), "DataFusion (or stores) in the model/adaptation layers: {wrong:#?}");
}
