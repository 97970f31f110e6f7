//! The layout follows the design: reads the crate's own sources and fails
//! when
//!
//! - the top-level modules of `src/` import each other in a circle (a
//!   `crate::X` path in module `A` is an edge `A -> X`), or import a
//!   module that is not in a layer below their own (see [`LAYERS`]);
//! - the submodules of `src/actors` import each other in a circle;
//! - anything under `src/core` (the pure state machines) names a runtime,
//!   a broker, a store, a command line parser, a clock or a thread (by
//!   name: `tokio`, `Instant`, `thread`, `spawn`, ...).
//!
//! `error` and `model` are the shared leaves: every part may use them, so
//! they must use nothing above them (no edge from a leaf to a non-leaf).
//! The crate root (`lib.rs`, `main.rs`) is not a module of the graph:
//! it only declares and wires the others.
//!
//! Comments are skipped (a doc link is no dependency); test modules are
//! not: they are compiled into the same crate.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The modules every other may use, which use none but each other.
const LEAVES: &[&str] = &["error", "model"];

/// The top-level modules from the bottom up: a module imports only
/// modules of layers below its own. `config` resolves the defaults of the
/// parts it configures, so it sits above them; `system` assembles them
/// and `node` runs each as a process of its own.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["model", "rideshare"],
    // The coordinator's seam and its records; each worker's store.
    &["coord", "store"],
    // The state machines: pure.
    &["core"],
    &["broker"],
    &["runtime"],
    &["actors"],
    &["http"],
    &["config"],
    &["system"],
    &["node"],
    // Commands that talk to a running system as a client.
    &["cli"],
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The text of a file without its comments (line and block), string
/// literals kept: good enough for finding paths.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let mut out = String::with_capacity(text.len());
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut in_str = false;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if in_str {
            out.push(c);
            if c == '\\' {
                if let Some(n) = next {
                    out.push(n);
                }
                i += 2;
                continue;
            }
            if c == '"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        match (c, next) {
            ('/', Some('/')) => {
                while i < bytes.len() && bytes[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i] == '/' && bytes.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == '*' && bytes.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if bytes[i] == '\n' {
                            out.push('\n');
                        }
                        i += 1;
                    }
                }
            }
            ('"', _) => {
                in_str = true;
                out.push(c);
                i += 1;
            }
            ('\'', _) => {
                // A char literal such as '"' must not open a string; a
                // lifetime ('a) has no closing quote within two chars.
                if bytes.get(i + 2) == Some(&'\'') {
                    out.extend(&bytes[i..i + 3]);
                    i += 3;
                } else if next == Some('\\') {
                    let end = (i + 2..bytes.len())
                        .find(|&j| bytes[j] == '\'')
                        .unwrap_or(i + 1);
                    out.extend(&bytes[i..=end]);
                    i = end + 1;
                } else {
                    out.push(c);
                    i += 1;
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every name that follows `prefix` in `text`, with the line it is on,
/// and the brace-group names for a `prefix{a, b::c}` form.
fn names_after(text: &str, prefix: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            // `prefix` must start a path, not end another identifier.
            let before = rest[..at].chars().last();
            let after = &rest[at + prefix.len()..];
            rest = after;
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            if let Some(group) = after.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let name = ident_at(item.trim());
                    if !name.is_empty() {
                        out.push((n + 1, name.to_string()));
                    }
                }
            } else {
                let name = ident_at(after);
                if !name.is_empty() {
                    out.push((n + 1, name.to_string()));
                }
            }
        }
    }
    out
}

type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// Every circle of `graph` (one per strongly connected component of more
/// than one node, or a node with an edge to itself), as the nodes of the
/// component and the edges inside it with where each is made.
fn cycles(graph: &Graph) -> Vec<String> {
    // Tarjan's algorithm, recursive: the graphs are small.
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(edges) = t.g.get(v) {
            for w in edges.keys() {
                let w = w.as_str();
                if !t.g.contains_key(w) {
                    continue;
                }
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w);
                if w == v {
                    break;
                }
            }
            t.found.push(comp);
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    let mut out = Vec::new();
    for comp in t.found {
        let set: BTreeSet<&str> = comp.iter().copied().collect();
        let self_loop = comp.len() == 1 && graph[comp[0]].contains_key(comp[0]);
        if comp.len() < 2 && !self_loop {
            continue;
        }
        let mut text = format!("circle through {set:?}:");
        for &from in &set {
            for (to, at) in &graph[from] {
                if set.contains(to.as_str()) {
                    text.push_str(&format!("\n    {from} -> {to} ({at})"));
                }
            }
        }
        out.push(text);
    }
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(src().parent().unwrap())
        .unwrap()
        .display()
        .to_string()
}

/// The top-level module a file of `src/` belongs to, or `None` for the
/// crate root.
fn top_module(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

fn top_graph() -> Graph {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph = Graph::new();
    for path in &files {
        let Some(from) = top_module(path) else {
            continue;
        };
        let edges = graph.entry(from.clone()).or_default();
        let text = code(path);
        let mut refs = names_after(&text, "crate::");
        // `super::` in a top-level file (src/x.rs) is the crate root.
        if path.parent() == Some(src().as_path()) {
            refs.extend(names_after(&text, "super::"));
        }
        for (line, to) in refs {
            if to != from {
                edges
                    .entry(to)
                    .or_insert_with(|| format!("{}:{line}", relative(path)));
            }
        }
    }
    graph
}

#[test]
fn top_level_modules_import_no_circle() {
    let graph = top_graph();
    let found = cycles(&graph);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn top_level_modules_import_only_layers_below_their_own() {
    let layer = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let mut wrong = Vec::new();
    for (from, edges) in top_graph() {
        let Some(own) = layer(&from) else {
            wrong.push(format!("{from}: in no layer (add it to LAYERS)"));
            continue;
        };
        for (to, at) in edges {
            match layer(&to) {
                Some(l) if l < own => {}
                Some(_) => wrong.push(format!("{from} -> {to} ({at}): not a layer below")),
                None => wrong.push(format!("{to}: in no layer (add it to LAYERS)")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn shared_leaves_import_nothing_above_them() {
    let graph = top_graph();
    let mut wrong = Vec::new();
    for leaf in LEAVES {
        for (to, at) in graph.get(*leaf).into_iter().flatten() {
            if !LEAVES.contains(&to.as_str()) {
                wrong.push(format!("{leaf} -> {to} ({at})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a shared leaf imports upward:\n{}",
        wrong.join("\n")
    );
}

/// The submodule of `src/actors` a file belongs to (`None` for
/// `actors/mod.rs`, the facade that re-exports).
fn actors_submodule(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src().join("actors")).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "mod").then_some(name)
}

#[test]
fn actors_submodules_import_no_circle() {
    let dir = src().join("actors");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let subs: BTreeSet<String> = files.iter().filter_map(|p| actors_submodule(p)).collect();
    // What actors/mod.rs re-exports, by the submodule it comes from.
    let facade = code(&dir.join("mod.rs"));
    let mut reexported = BTreeMap::new();
    for sub in &subs {
        for (_, name) in names_after(&facade, &format!("pub use {sub}::")) {
            reexported.insert(name, sub.clone());
        }
    }
    let resolve = |name: &str| -> Option<String> {
        if subs.contains(name) {
            Some(name.to_string())
        } else {
            reexported.get(name).cloned()
        }
    };
    let mut graph = Graph::new();
    for path in &files {
        let Some(from) = actors_submodule(path) else {
            continue;
        };
        let nested = path.parent() != Some(dir.as_path());
        let edges = graph.entry(from.clone()).or_default();
        let text = code(path);
        let mut refs = names_after(&text, "crate::actors::");
        refs.extend(names_after(
            &text,
            if nested { "super::super::" } else { "super::" },
        ));
        for (line, name) in refs {
            if let Some(to) = resolve(&name) {
                if to != from {
                    edges
                        .entry(to)
                        .or_insert_with(|| format!("{}:{line}", relative(path)));
                }
            }
        }
    }
    let found = cycles(&graph);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// Whether `word` stands in `line` as a name of its own (as `tokio` in
/// `tokio::spawn`, not as `spawn` in `respawn`).
fn has_word(line: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().last();
        let after = line[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

#[test]
fn core_is_pure() {
    const FORBIDDEN: &[&str] = &[
        "actix",
        "tokio",
        "lapin",
        "sled",
        "clap",
        "zookeeper_client",
        "bollard",
        "reqwest",
        "Instant",
        "SystemTime",
        "UNIX_EPOCH",
        "thread",
        "spawn",
        "spawn_blocking",
    ];
    let mut files = Vec::new();
    rust_files(&src().join("core"), &mut files);
    let mut wrong = Vec::new();
    for path in &files {
        let text = code(path);
        for (n, line) in text.lines().enumerate() {
            for word in FORBIDDEN {
                if has_word(line, word) {
                    wrong.push(format!("{}:{}: {word}", relative(path), n + 1));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "src/core must stay pure (no runtime, I/O, clock or thread):\n{}",
        wrong.join("\n")
    );
}
