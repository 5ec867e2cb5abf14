//! The module layering of chat-node and of the operator has no cycle: from a module's
//! non-test code, follow every `crate::<module>` path (in `use` lines and inline) to the
//! crate's top-level modules, and the graph they make must be acyclic (the layers drawn in
//! `chat-node/src/lib.rs`). Doc comments do not count: a link is no dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `module -> module it names -> the first place it does`.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules named after `crate::` in one line: `crate::a::b` gives `a`,
/// `crate::{a, b::c}` gives `a` and `b`.
fn named_modules(line: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        let rest = &line[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        out.push(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        let name = rel.file_name().unwrap().to_string_lossy();
        if matches!(top.as_str(), "lib" | "main" | "bin") || name == "tests.rs" {
            continue;
        }
        graph.entry(top.clone()).or_default();
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for module in named_modules(line) {
                if module != top {
                    graph
                        .entry(top.clone())
                        .or_default()
                        .entry(module)
                        .or_insert_with(|| format!("{}:{}", rel.display(), n + 1));
                }
            }
        }
    }
    graph
}

/// A cycle as `a -> b (where) -> ... -> a`, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if !done.insert(node.to_string()) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(graph, start, &mut Vec::new(), &mut done))
}

fn explain(graph: &Graph, cycle: &[String]) -> String {
    cycle
        .windows(2)
        .map(|w| format!("{} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
        .collect::<Vec<_>>()
        .join("\n  ")
}

fn assert_acyclic(src: &Path) {
    let graph = graph(src);
    assert!(graph.len() > 3, "read too few modules in {}", src.display());
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "module cycle in {}:\n  {}",
            src.display(),
            explain(&graph, &cycle)
        );
    }
}

#[test]
fn chat_node_modules_form_layers() {
    assert_acyclic(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}

#[test]
fn operator_modules_form_layers() {
    assert_acyclic(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../operator/src"));
}

#[test]
fn the_check_sees_a_cycle_and_every_form_of_path() {
    assert_eq!(named_modules("use crate::chat::Chat;"), ["chat"]);
    assert_eq!(
        named_modules("use crate::{config::Limits, error::ApiError};"),
        ["config", "error"]
    );
    assert_eq!(
        named_modules("use crate::{hub::{Hub, Closer}, ws};"),
        ["hub", "ws"]
    );
    let mut graph = Graph::new();
    graph
        .entry("a".into())
        .or_default()
        .insert("b".into(), "a.rs:1".into());
    assert_eq!(find_cycle(&graph), None);
    graph
        .entry("b".into())
        .or_default()
        .insert("a".into(), "b.rs:2".into());
    let cycle = find_cycle(&graph).expect("a -> b -> a");
    assert_eq!(
        explain(&graph, &cycle),
        "a -> b (a.rs:1)\n  b -> a (b.rs:2)"
    );
}
