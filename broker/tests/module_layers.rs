//! The server's top-level modules form layers: no import cycle between them
//! (STYLE.md "The house"). Reads `src/`, takes every `crate::<module>` a
//! top-level module's files name outside comments and unit tests as an edge, and
//! fails naming the cycle if the graph has one. Inside a module (`replication/`
//! needs one for openraft's type declarations) cycles are allowed.
//!
//! Before the crate split and `service/`, 16 of the 20 top-level modules formed one
//! cycle (api, auth, config, consumer, control, error, faults, health, http,
//! metrics, node, producer, raft, send_batcher, storage, topic_limits);
//! `a_cycle_is_found` shows the check finds one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `path` (or `path` itself).
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).expect("reading a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The modules `source` names as `crate::<module>`, comment lines and the unit
/// test module (always last in a file here) left out.
fn named_modules(source: &str) -> BTreeSet<String> {
    let code = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let mut names = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // `broker_crate::…` and the like are other crates.
            let preceded = line[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            if !name.is_empty() && !preceded {
                names.insert(name);
            }
        }
    }
    names
}

/// Top-level module → the top-level modules it uses.
fn module_graph(src: &Path) -> Graph {
    let mut modules = Graph::new();
    for entry in fs::read_dir(src).expect("reading src/") {
        let path = entry.expect("a directory entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if ["lib", "main", "bin"].contains(&stem) {
            continue;
        }
        let mut uses = BTreeSet::new();
        for file in rust_files(&path) {
            let source = fs::read_to_string(&file).expect("reading a source file");
            uses.extend(named_modules(&source));
        }
        uses.remove(stem);
        modules.insert(stem.to_string(), uses);
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    for uses in modules.values_mut() {
        uses.retain(|m| names.contains(m));
    }
    modules
}

/// A cycle of `graph` as the path that closes it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        graph: &Graph,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node).unwrap_or_default();
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut marks, &mut Vec::new()))
}

#[test]
fn top_level_modules_form_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    for expected in ["http", "service", "replication", "config"] {
        assert!(
            graph.contains_key(expected),
            "no module `{expected}` found in {}: the check reads the wrong tree",
            src.display()
        );
    }
    assert!(
        graph["http"].contains("service") && graph["service"].contains("replication"),
        "the graph misses edges every layout has: {graph:#?}"
    );
    let listing: Vec<String> = graph
        .iter()
        .map(|(module, uses)| format!("{module} -> {uses:?}"))
        .collect();
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "top-level modules import each other in a cycle: {}\n{}",
            cycle.join(" -> "),
            listing.join("\n")
        );
    }
}

#[test]
fn a_cycle_is_found() {
    let graph: Graph = [
        ("http", &["service"][..]),
        ("service", &["replication", "config"]),
        ("replication", &["config", "service"]),
        ("config", &[]),
    ]
    .into_iter()
    .map(|(m, uses)| (m.to_string(), uses.iter().map(|u| u.to_string()).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(vec![
            "service".to_string(),
            "replication".to_string(),
            "service".to_string()
        ])
    );
    let sources = "use crate::a::X;\n// crate::b::Y in a comment\nuse broker_crate::c;\n\
                   #[cfg(test)]\nmod tests { use crate::d; }";
    assert_eq!(named_modules(sources), BTreeSet::from(["a".to_string()]));
}
