//! Module hygiene of the shards and protocol crates, checked from their sources: no two
//! modules import each other (no cycle in the `crate::` references between product modules,
//! tests excluded) and no product file is over 600 lines (a trailing `#[cfg(test)]` module
//! not counted).
//!
//! How: every `crate::NAME` path outside the trailing test module, including each name of a
//! grouped `use crate::{a, b::c}`, is an edge from the file's module to module `NAME` (when
//! `NAME` is a module of the crate). A depth-first search over those edges finds any cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

const MAX_LINES: usize = 600;

/// The product part of a source file: everything before a trailing `#[cfg(test)]` module.
fn product(text: &str) -> &str {
    match text.rfind("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Module names a file refers to through `crate::`.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}, e}`: the names at depth 0.
            let (mut depth, mut start) = (0usize, true);
            for (j, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        out.insert(ident(&group[j..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

/// module -> modules it refers to, for the `src/` of one crate (flat modules).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(src).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(&path).expect("read source");
            let lines = product(&text).lines().count();
            assert!(
                lines <= MAX_LINES,
                "{} has {lines} product lines (limit {MAX_LINES})",
                path.display()
            );
            files.insert(name, text);
        }
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .filter(|(name, _)| *name != "lib" && *name != "main")
        .map(|(name, text)| {
            let refs = references(product(text))
                .into_iter()
                .filter(|r| modules.contains(r) && r != name)
                .collect();
            (name.clone(), refs)
        })
        .collect()
}

/// A cycle in `g`, as the path of modules that closes it, if there is one.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in g.keys() {
        if let Some(c) = visit(g, node, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_checker_finds_references_and_cycles() {
    let refs = references("use crate::{a, b::{c, d}, e::F};\nlet x = crate::g::h();");
    assert_eq!(refs, ["a", "b", "e", "g"].map(String::from).into());
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), ["b".to_owned()].into());
    g.insert("b".to_owned(), ["c".to_owned()].into());
    g.insert("c".to_owned(), BTreeSet::new());
    assert_eq!(find_cycle(&g), None);
    g.insert("c".to_owned(), ["a".to_owned()].into());
    assert_eq!(
        find_cycle(&g),
        Some(["a", "b", "c", "a"].map(String::from).to_vec())
    );
    assert_eq!(product("x\n#[cfg(test)]\nmod tests {}\n"), "x\n");
}

#[test]
fn shards_and_protocol_modules_form_no_cycle_and_stay_small() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for src in [root.join("src"), root.join("../protocol/src")] {
        let g = graph(&src);
        assert!(g.len() >= 3, "read the modules of {}", src.display());
        if let Some(cycle) = find_cycle(&g) {
            panic!(
                "{}: modules import each other: {}",
                src.display(),
                cycle.join(" -> ")
            );
        }
    }
    // The runtime split this test guards: the connection knows nothing of the shard.
    let g = graph(&root.join("src"));
    assert!(!g["conn"].contains("shard"), "conn imports shard");
    assert!(g["driver"].contains("shard") && g["driver"].contains("conn"));
}
