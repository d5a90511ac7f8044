//! The crate's architecture, checked from its source: the layers (launcher/ decides, kernel/ touches the
//! kernel, operator/ talks to people, event_loop.rs and main.rs wire them) depend on each other in one
//! direction only, the decisions import nothing that does I/O, sibling files inside a layer form no
//! cycle, and no source file grows past what one can read in a sitting. It reads the `crate::` and
//! `super::` paths of every file under src/ (the fixtures live in examples/, outside src/).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Past this many lines a file has more than one job; split it by concern.
const MAX_FILE_LINES: usize = 700;

/// Which layers each layer may use. Anything else is a wrong-way dependency.
const ALLOWED: &[(&str, &[&str])] = &[
    ("launcher", &[]),
    ("kernel", &["launcher"]),
    ("operator", &["launcher", "kernel"]),
    ("event_loop", &["launcher", "kernel", "operator"]),
    ("main", &["launcher", "kernel", "operator", "event_loop"]),
];

/// One source file: its module path (e.g. ["launcher", "reload"]) and text.
struct Source {
    module: Vec<String>,
    path: PathBuf,
    text: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Vec<String> = relative
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            Source { module, path, text }
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The module paths a file refers to through `crate::` and `super::`, resolved to absolute paths.
/// `crate::a::{b, c}` yields a::b and a::c.
fn references(source: &Source) -> Vec<Vec<String>> {
    let code: String = source
        .text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(&source.module))] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(prefix) {
            let preceded_by_ident = rest[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            rest = &rest[at + prefix.len()..];
            if preceded_by_ident {
                continue;
            }
            for path in expand(rest) {
                let mut absolute = base.clone();
                absolute.extend(path);
                found.push(absolute);
            }
        }
    }
    found
}

/// `a::b::{c, d}...` -> [a, b, c], [a, b, d]; `a::b...` -> [a, b]; stops at the first non-path token.
fn expand(text: &str) -> Vec<Vec<String>> {
    let mut path = Vec::new();
    let mut rest = text;
    loop {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        rest = &rest[ident.len()..];
        path.push(ident);
        match rest.strip_prefix("::") {
            Some(after) => rest = after,
            None => return vec![path],
        }
    }
    match rest.strip_prefix('{') {
        Some(group) => {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            inner
                .split(',')
                .map(|item| item.trim())
                .filter(|item| !item.is_empty())
                .map(|item| {
                    let mut full = path.clone();
                    full.extend(
                        item.split("::")
                            .next()
                            .map(|first| first.split_whitespace().next().unwrap_or("").to_string()),
                    );
                    full
                })
                .collect()
        }
        None => vec![path],
    }
}

fn parent(module: &[String]) -> Vec<String> {
    module[..module.len().saturating_sub(1)].to_vec()
}

fn layer(module: &[String]) -> String {
    module.first().cloned().unwrap_or_else(|| "main".into())
}

/// The longest prefix of `path` that is a module of the crate.
fn resolve(path: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
        .unwrap_or_default()
}

/// A cycle in `edges`, as the list of nodes around it, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

/// (from module, to module) for every reference between two different modules of the crate.
fn module_edges() -> Vec<(Vec<String>, Vec<String>)> {
    let sources = sources();
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    let mut edges = Vec::new();
    for source in &sources {
        for reference in references(source) {
            let target = resolve(&reference, &modules);
            if target != source.module && !target.is_empty() {
                edges.push((source.module.clone(), target));
            }
        }
    }
    edges
}

#[test]
fn layers_depend_on_each_other_in_one_direction_only() {
    let mut wrong_way = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in module_edges() {
        let (from_layer, to_layer) = (layer(&from), layer(&to));
        if from_layer == to_layer {
            continue;
        }
        graph
            .entry(from_layer.clone())
            .or_default()
            .insert(to_layer.clone());
        let allowed = ALLOWED
            .iter()
            .find(|(l, _)| *l == from_layer)
            .map_or(&[][..], |(_, allowed)| *allowed);
        if !allowed.contains(&to_layer.as_str()) {
            wrong_way.push(format!("{} -> {}", from.join("::"), to.join("::")));
        }
    }
    assert!(
        graph.contains_key("kernel") && graph.contains_key("operator"),
        "the check found no references between layers at all ({graph:?}); the parser is broken"
    );
    assert_eq!(find_cycle(&graph), None, "the layers form a cycle");
    assert!(
        wrong_way.is_empty(),
        "wrong-way dependencies (allowed: {ALLOWED:?}):\n{}",
        wrong_way.join("\n")
    );
}

#[test]
fn files_inside_a_layer_form_no_cycle() {
    // A folder's mod.rs is its front door (it re-exports its children), so edges into it are left out;
    // what remains must be acyclic.
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let folders: BTreeSet<Vec<String>> = sources()
        .iter()
        .filter(|s| s.path.ends_with("mod.rs"))
        .map(|s| s.module.clone())
        .collect();
    for (from, to) in module_edges() {
        if layer(&from) == layer(&to) && !folders.contains(&to) && !folders.contains(&from) {
            graph
                .entry(from.join("::"))
                .or_default()
                .insert(to.join("::"));
        }
    }
    assert!(
        !graph.is_empty(),
        "no references between sibling files found; the parser is broken"
    );
    assert_eq!(find_cycle(&graph), None, "sibling files form a cycle");
}

#[test]
fn no_source_file_is_longer_than_one_sitting() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    let long: Vec<String> = files
        .iter()
        .map(|p| (p, std::fs::read_to_string(p).unwrap().lines().count()))
        .filter(|(_, lines)| *lines > MAX_FILE_LINES)
        .map(|(p, lines)| format!("{} ({lines} lines)", p.display()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines; split them by concern: {long:?}"
    );
}

#[test]
fn every_source_file_says_what_it_owns() {
    let missing: Vec<String> = sources()
        .iter()
        .filter(|s| !s.text.starts_with("//!"))
        .map(|s| s.path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` header: {missing:?}"
    );
}

#[test]
fn the_checker_sees_a_planted_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&graph), None);
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        expand("kernel::{inject, listen::Held}; x"),
        vec![
            vec!["kernel".to_string(), "inject".to_string()],
            vec!["kernel".to_string(), "listen".to_string()]
        ]
    );
}
