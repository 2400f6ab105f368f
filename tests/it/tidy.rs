//! Repository hygiene: every Rust source file opens with a `//!` line saying what it holds.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("target") && !path.ends_with("node_modules") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in [
        "runtime", "sdk", "tests", "plugins", "examples", "bench", "clients",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            !text.starts_with("//!")
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` first line: {missing:#?}"
    );
}

/// The module a file of `runtime/src` is, as path segments (`lib.rs` is the root, `[]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let segments: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if segments == ["lib"] || segments == ["main"] {
        Vec::new()
    } else {
        segments
    }
}

/// Every module of `runtime/src` (tests left out) and the modules it names: `crate::` and
/// `super::` paths and `use child::` lines, each resolved to the longest module it starts with.
fn runtime_imports()
-> std::collections::BTreeMap<Vec<String>, std::collections::BTreeSet<Vec<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: std::collections::BTreeMap<Vec<String>, PathBuf> = files
        .into_iter()
        .map(|file| (module_of(&src, &file), file))
        .filter(|(module, _)| !module.iter().any(|segment| segment == "tests"))
        .collect();
    let resolve = |segments: &[String]| {
        (1..=segments.len())
            .rev()
            .map(|n| segments[..n].to_vec())
            .find(|prefix| modules.contains_key(prefix))
    };
    let mut graph = std::collections::BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let mut named = std::collections::BTreeSet::new();
        for line in code.lines() {
            let line = line.split("//").next().unwrap_or("");
            let words: Vec<&str> = line
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .filter(|word| word.contains("::"))
                .collect();
            for word in words {
                let mut segments: Vec<String> = word
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                let mut base: Vec<String> = match segments.first().map(String::as_str) {
                    Some("crate") => Vec::new(),
                    Some("super") => module[..module.len().saturating_sub(1)].to_vec(),
                    Some(_) if line.trim_start().starts_with("use ") => module.clone(),
                    _ => continue,
                };
                segments.remove(0);
                while segments.first().is_some_and(|s| s == "super") {
                    base.pop();
                    segments.remove(0);
                }
                let child = segments.is_empty()
                    || !matches!(word.split("::").next(), Some("crate" | "super"));
                if child {
                    // `use child::item`: the first segment was the child's name.
                    segments = word.split("::").map(str::to_owned).collect();
                }
                base.extend(segments);
                if let Some(target) = resolve(&base) {
                    named.insert(target);
                }
            }
        }
        graph.insert(module.clone(), named);
    }
    graph
}

/// A circle in `graph`, if there is one (each node as `a/b`).
fn find_circle(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        done: &mut std::collections::BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == node) {
            let mut circle = path[start..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, done, path) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

/// The runtime's modules import each other in layers (ARCHITECTURE.md, "Layers"): no circle
/// between top-level modules, and none between the files inside a module either (a module's
/// facade and its own children are one unit, so a child may use its parent's items).
#[test]
fn the_runtime_has_no_import_circle() {
    let imports = runtime_imports();
    assert!(imports.len() > 50, "found only {} modules", imports.len());
    let top_level = |module: &Vec<String>| module.first().cloned().unwrap_or_default();
    let mut modules =
        std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    let mut files = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for (from, targets) in &imports {
        for to in targets {
            if top_level(from) != top_level(to) && !from.is_empty() {
                modules
                    .entry(top_level(from))
                    .or_default()
                    .insert(top_level(to));
            }
            let related = from.starts_with(to) || to.starts_with(from);
            if !related {
                files
                    .entry(from.join("/"))
                    .or_default()
                    .insert(to.join("/"));
            }
        }
    }
    assert!(
        modules
            .get("node")
            .is_some_and(|uses| uses.contains("plugins")),
        "the graph reader lost the node's imports: {modules:?}"
    );
    assert_eq!(
        find_circle(&modules),
        None,
        "top-level modules import in a circle"
    );
    assert_eq!(find_circle(&files), None, "files import in a circle");
}
