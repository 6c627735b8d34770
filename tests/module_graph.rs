//! Module hygiene of every product crate, checked from the sources: `src/` (the ovation
//! crate), `netstack/src`, `media/src`, `protocol/src` and `shards/src`.
//!
//! - No product file is over 600 lines (a trailing `#[cfg(test)] mod tests` not counted).
//! - No two modules of one crate depend on each other, directly or around a longer cycle.
//!
//! How the graph is built. The modules are found by following the `mod NAME;` declarations
//! from `lib.rs`/`main.rs` (`#[path]` honoured); a declaration under `#[cfg(test)]` is test
//! code and left out. Every `.rs` file under a `src/` must be reached, as product or as test,
//! so a file the walker cannot see fails the test instead of escaping it. Within one file's
//! product text (line comments removed), each path is resolved the way rustc would start
//! resolving it: `crate::`, `self::`, `super::` (repeated), the name of a child module declared
//! in that file, or a name a `use` in that file bound to one of the crate's modules. The
//! resolved path ends at the deepest module of the crate it names; that module is an edge.
//! A name reached through a re-export (`pub use a::X` in module `m`, then `crate::m::X`) is
//! followed to the module that defines it. Not edges:
//! - declaring a child (`mod x;`): the parent owns the child, it does not import it;
//! - a parent's `pub use child::X` that only re-exports (the parent's own code never names
//!   `X`): a facade, followed as above instead.
//!
//! One exception, listed in [`IMPL_EXTENSIONS`] with its reason: a file that holds nothing but
//! `impl` blocks of its parent's type is the parent module split across files (rustc resolves
//! `self.method()` into it without naming a path, so a path graph cannot see the parent's side).
//! The test checks that each listed file really holds only such blocks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

/// The product crates: (name, src directory, root files).
const CRATES: &[(&str, &str, &[&str])] = &[
    ("ovation", "src", &["lib.rs", "main.rs"]),
    ("netstack", "netstack/src", &["lib.rs"]),
    ("media", "media/src", &["lib.rs"]),
    ("protocol", "protocol/src", &["lib.rs"]),
    ("shards", "shards/src", &["lib.rs"]),
];

/// Files that are `impl` blocks of their parent module's type, merged into the parent.
///
/// `app::operator` and `app::poll_runner` are `impl App` blocks: the operator commands and the
/// poll lifecycle, kept apart from `app/mod.rs` only to keep each file readable. They own no
/// state and no type of their own; `App`'s fields stay in `app/mod.rs`, and the state they
/// drive lives in the sibling modules (`polls`, `groups`, `streams`, ...), which they import
/// like `app/mod.rs` does. `app/mod.rs` calls their methods as `self.x()`, which no path shows.
/// `app::live` is the same for the media side (publish turns, segments to the shards); its
/// state lives in `app::media_state`. `app::remediation_apply` applies remediation decisions;
/// its state lives in `app::remediation`. `app::recording_runner` (recordings; state in
/// `app::recordings`) and `app::rebroadcast` (state in `app::media_state`) likewise, and
/// `app::session_ops` (viewing sessions; state in `app::sessions`) and `app::ad_ops` (ads,
/// programs, breaks, beacons; state in `app::ads`). `app::relay_ops` relays streams across
/// edges; its state lives in `app::relays`.
const IMPL_EXTENSIONS: &[(&str, &str)] = &[
    ("ovation", "app::operator"),
    ("ovation", "app::poll_runner"),
    ("ovation", "app::live"),
    ("ovation", "app::remediation_apply"),
    ("shards", "shard::delivery"),
    ("shards", "shard::serve"),
    ("shards", "shard::uplink"),
    ("shards", "conn::receive"),
    ("ovation", "app::recording_runner"),
    ("ovation", "app::rebroadcast"),
    ("ovation", "app::cluster"),
    ("ovation", "app::cluster_votes"),
    ("ovation", "app::session_ops"),
    ("ovation", "app::ad_ops"),
    ("ovation", "app::relay_ops"),
];

/// The product part of a source file: everything before a trailing `#[cfg(test)]` module.
fn product(text: &str) -> &str {
    match text.rfind("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// The text without `//` comments (doc comments included: their links are not imports).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One source file of a crate.
struct File {
    path: PathBuf,
    /// Module path inside the crate (`[]` for the crate root).
    module: Vec<String>,
    /// Product text, comments removed.
    code: String,
    /// Child modules declared here (product ones only).
    children: BTreeSet<String>,
}

/// Declarations `mod NAME;` in `text`: (name, `#[path]` if any, under `#[cfg(test)]`).
fn declarations(text: &str) -> Vec<(String, Option<String>, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        let rest = ["mod ", "pub mod ", "pub(crate) mod ", "pub(super) mod "]
            .iter()
            .find_map(|p| t.strip_prefix(p));
        let Some(name) = rest.and_then(|r| r.strip_suffix(';')) else {
            continue;
        };
        let (mut path, mut test) = (None, false);
        for attr in lines[..i].iter().rev().map(|l| l.trim()) {
            if !attr.starts_with("#[") {
                break;
            }
            test |= attr.starts_with("#[cfg(test)]");
            if let Some(p) = attr.strip_prefix("#[path = \"") {
                path = p.strip_suffix("\"]").map(str::to_owned);
            }
        }
        out.push((name.trim().to_owned(), path, test));
    }
    out
}

/// Every file of a crate, following `mod` declarations from its roots. Returns the product
/// files and the test files reached.
fn walk(src: &Path, roots: &[&str]) -> (Vec<File>, BTreeSet<PathBuf>) {
    let (mut product_files, mut tests) = (Vec::new(), BTreeSet::new());
    let mut todo: Vec<(PathBuf, Vec<String>)> =
        roots.iter().map(|r| (src.join(r), Vec::new())).collect();
    while let Some((path, module)) = todo.pop() {
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let dir = path.parent().expect("a file has a directory");
        let stem = path.file_stem().expect("file stem").to_string_lossy();
        let own_dir = if ["mod", "lib", "main"].contains(&&*stem) {
            dir.to_path_buf()
        } else {
            dir.join(&*stem)
        };
        let mut children = BTreeSet::new();
        for (name, attr_path, test) in declarations(&text) {
            let file = match attr_path {
                Some(p) => dir.join(p),
                None if own_dir.join(format!("{name}.rs")).exists() => {
                    own_dir.join(format!("{name}.rs"))
                }
                None => own_dir.join(&name).join("mod.rs"),
            };
            if test {
                tests.insert(file);
            } else {
                let mut m = module.clone();
                m.push(name.clone());
                children.insert(name);
                todo.push((file, m));
            }
        }
        product_files.push(File {
            code: strip_comments(product(&text)),
            path,
            module,
            children,
        });
    }
    (product_files, tests)
}

/// A parsed path: its segments, and for a `use` leaf the name it binds.
#[derive(Debug, PartialEq)]
struct UsePath {
    segments: Vec<String>,
    binds: Option<String>,
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The leaves of a use tree such as `a::{b, c::{self, D as E}, f::*}`.
fn use_tree(s: &str) -> Vec<UsePath> {
    fn parse(s: &str, prefix: Vec<String>, out: &mut Vec<UsePath>) {
        let s = s.trim();
        if let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            let (mut depth, mut start) = (0, 0);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        parse(&inner[start..i], prefix.clone(), out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            if !inner[start..].trim().is_empty() {
                parse(&inner[start..], prefix, out);
            }
            return;
        }
        match s.split_once("::") {
            Some((head, rest)) => {
                let mut p = prefix;
                p.push(head.trim().to_owned());
                parse(rest, p, out);
            }
            None => {
                let (name, alias) = match s.split_once(" as ") {
                    Some((n, a)) => (n.trim(), Some(a.trim())),
                    None => (s, None),
                };
                let mut segments = prefix;
                let binds = if name == "self" {
                    segments.last().cloned()
                } else if name == "*" {
                    None
                } else {
                    segments.push(name.to_owned());
                    Some(name.to_owned())
                };
                out.push(UsePath {
                    segments,
                    binds: alias.map(str::to_owned).or(binds),
                });
            }
        }
    }
    let mut out = Vec::new();
    parse(s, Vec::new(), &mut out);
    out
}

/// `use` declarations of `code`: (re-exported, leaves), and `code` with them blanked out.
fn uses(code: &str) -> (Vec<(bool, UsePath)>, String) {
    let mut out = Vec::new();
    let mut rest = String::with_capacity(code.len());
    let mut i = 0;
    while let Some(at) = code[i..].find("use ").map(|j| i + j) {
        let before = &code[..at];
        let line_start = before.rfind('\n').map_or(0, |j| j + 1);
        let lead = code[line_start..at].trim();
        let is_decl = lead.is_empty() || lead.starts_with("pub");
        let boundary = at == 0 || !is_ident(code[..at].chars().last().unwrap_or(' '));
        let Some(end) = code[at..].find(';').map(|j| at + j) else {
            break;
        };
        if is_decl && boundary {
            rest.push_str(&code[i..line_start]);
            let public = lead.starts_with("pub");
            let tree: String = code[at + 4..end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            out.extend(use_tree(&tree).into_iter().map(|u| (public, u)));
            i = end + 1;
        } else {
            rest.push_str(&code[i..at + 4]);
            i = at + 4;
        }
    }
    rest.push_str(&code[i..]);
    (out, rest)
}

/// Paths of two or more segments in expression/type position (`a::b`, `super::c::D`).
fn expression_paths(code: &str) -> Vec<Vec<String>> {
    let chars: Vec<(usize, char)> = code.char_indices().collect();
    let mut out = Vec::new();
    let mut k = 0;
    while k < chars.len() {
        let (at, c) = chars[k];
        let prev_ok = at == 0 || {
            let before = &code[..at];
            !before.ends_with("::") && !before.chars().last().is_some_and(is_ident)
        };
        if !(is_ident(c) && prev_ok) {
            k += 1;
            continue;
        }
        let mut segments = Vec::new();
        let mut pos = at;
        loop {
            let len: usize = code[pos..]
                .chars()
                .take_while(|c| is_ident(*c))
                .map(char::len_utf8)
                .sum();
            if len == 0 {
                break;
            }
            segments.push(code[pos..pos + len].to_owned());
            pos += len;
            match code[pos..].strip_prefix("::") {
                Some(r) if r.starts_with(|c: char| is_ident(c)) => pos += 2,
                _ => break,
            }
        }
        if segments.len() >= 2 {
            out.push(segments);
        }
        while k < chars.len() && chars[k].0 < pos {
            k += 1;
        }
    }
    out
}

/// How many times `word` occurs as a whole identifier in `code`.
fn occurrences(code: &str, word: &str) -> usize {
    code.match_indices(word)
        .filter(|(i, _)| {
            let before = code[..*i].chars().last();
            let after = code[i + word.len()..].chars().next();
            !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
        })
        .count()
}

/// The dependency graph of one crate: module -> modules it depends on.
struct Crate {
    files: Vec<File>,
    modules: BTreeSet<Vec<String>>,
    /// Per module: re-exported name -> absolute path it stands for.
    reexports: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
}

impl Crate {
    fn new(files: Vec<File>) -> Crate {
        let modules = files.iter().map(|f| f.module.clone()).collect();
        let mut c = Crate {
            files,
            modules,
            reexports: BTreeMap::new(),
        };
        for f in 0..c.files.len() {
            let (decls, _) = uses(&c.files[f].code);
            let mut map = BTreeMap::new();
            for (public, u) in decls {
                if let (true, Some(name), Some(abs)) = (
                    public,
                    &u.binds,
                    c.absolute(f, &u.segments, &BTreeMap::new()),
                ) {
                    map.insert(name.clone(), abs);
                }
            }
            c.reexports.insert(c.files[f].module.clone(), map);
        }
        c
    }

    /// The absolute form of `segments` as written in file `f`, if it names this crate.
    fn absolute(
        &self,
        f: usize,
        segments: &[String],
        bound: &BTreeMap<String, Vec<String>>,
    ) -> Option<Vec<String>> {
        let file = &self.files[f];
        let first = segments.first()?.as_str();
        let mut abs = match first {
            "crate" => Vec::new(),
            "self" => file.module.clone(),
            "super" => {
                let mut m = file.module.clone();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    m.pop()?;
                    rest = &rest[1..];
                }
                m.extend(rest.iter().cloned());
                return Some(m);
            }
            name if file.children.contains(name) => {
                let mut m = file.module.clone();
                m.push(name.to_owned());
                m.extend(segments[1..].iter().cloned());
                return Some(m);
            }
            name => {
                let mut m = bound.get(name)?.clone();
                m.extend(segments[1..].iter().cloned());
                return Some(m);
            }
        };
        abs.extend(segments[1..].iter().cloned());
        Some(abs)
    }

    /// The module an absolute path lands in, re-exports followed.
    fn module_of(&self, mut abs: Vec<String>) -> Vec<String> {
        for _ in 0..8 {
            let mut m = abs.clone();
            while !self.modules.contains(&m) {
                m.pop();
            }
            match abs
                .get(m.len())
                .and_then(|name| self.reexports[&m].get(name))
            {
                Some(target) if *target != abs[..=m.len()] => {
                    let mut next = target.clone();
                    next.extend(abs[m.len() + 1..].iter().cloned());
                    abs = next;
                }
                _ => return m,
            }
        }
        panic!("re-exports of {abs:?} do not settle");
    }

    /// Modules file `f` depends on.
    fn edges(&self, f: usize) -> BTreeSet<Vec<String>> {
        let file = &self.files[f];
        let (decls, rest) = uses(&file.code);
        let mut bound = BTreeMap::new();
        let mut out = BTreeSet::new();
        for (public, u) in &decls {
            let Some(abs) = self.absolute(f, &u.segments, &bound) else {
                continue;
            };
            if let Some(name) = &u.binds {
                bound.insert(name.clone(), abs.clone());
            }
            // A re-export the module's own code never names is a facade, not an import.
            let used_here = u.binds.as_ref().is_some_and(|n| occurrences(&rest, n) > 0);
            if !public || used_here {
                out.insert(self.module_of(abs));
            }
        }
        for path in expression_paths(&rest) {
            if let Some(abs) = self.absolute(f, &path, &bound) {
                out.insert(self.module_of(abs));
            }
        }
        out.remove(&file.module);
        out
    }
}

/// A cycle in `g`, as the path of nodes that closes it, if there is one.
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

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// Whether a file's product code holds only `use` declarations, `impl` blocks and private
/// helper functions (which nothing outside the file can call).
fn only_impl_blocks(code: &str) -> bool {
    let mut impls = 0;
    for line in code.lines().filter(|l| !l.starts_with(char::is_whitespace)) {
        let l = line.trim();
        if l.is_empty() || l.starts_with('}') || l.starts_with("#[") || l.starts_with("use ") {
            continue;
        }
        if l.starts_with("fn ") {
            continue;
        }
        if !l.starts_with("impl ") {
            return false;
        }
        impls += 1;
    }
    impls > 0
}

/// The module graph of one crate (names joined with `::`, the root is `crate`), after
/// checking sizes and that every file was reached.
fn crate_graph(krate: &str, src: &Path, roots: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let (files, tests) = walk(src, roots);
    for f in &files {
        let lines = fs::read_to_string(&f.path).expect("read source");
        let lines = product(&lines).lines().count();
        assert!(
            lines <= MAX_LINES,
            "{} has {lines} product lines (limit {MAX_LINES})",
            f.path.display()
        );
    }
    let reached: BTreeSet<PathBuf> = files.iter().map(|f| f.path.clone()).chain(tests).collect();
    let mut all = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in fs::read_dir(&d).expect("read dir") {
            let p = entry.expect("dir entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                all.push(p);
            }
        }
    }
    for p in all {
        assert!(
            reached.contains(&p),
            "{} is not reached from {roots:?}",
            p.display()
        );
    }
    let c = Crate::new(files);
    let merged: BTreeMap<String, String> = IMPL_EXTENSIONS
        .iter()
        .filter(|(k, _)| *k == krate)
        .map(|(_, m)| {
            let f = c.files.iter().find(|f| name(&f.module) == *m);
            let f = f.unwrap_or_else(|| panic!("{krate}: listed extension {m} exists"));
            assert!(
                only_impl_blocks(&f.code),
                "{}: listed as an impl extension of its parent but holds more than impl blocks and private helpers",
                f.path.display()
            );
            (m.to_string(), name(&f.module[..f.module.len() - 1]))
        })
        .collect();
    let node = |m: &[String]| {
        let n = name(m);
        merged.get(&n).cloned().unwrap_or(n)
    };
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (i, f) in c.files.iter().enumerate() {
        let from = node(&f.module);
        let to: BTreeSet<String> = c
            .edges(i)
            .iter()
            .map(|m| node(m))
            .filter(|m| *m != from)
            .collect();
        g.entry(from).or_default().extend(to);
    }
    g
}

#[test]
fn the_checker_parses_resolves_and_finds_cycles() {
    let leaves = use_tree("a::{b, c::{self, D as E}, f::*}");
    let seg = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        leaves,
        vec![
            UsePath {
                segments: seg(&["a", "b"]),
                binds: Some("b".into())
            },
            UsePath {
                segments: seg(&["a", "c"]),
                binds: Some("c".into())
            },
            UsePath {
                segments: seg(&["a", "c", "D"]),
                binds: Some("E".into())
            },
            UsePath {
                segments: seg(&["a", "f"]),
                binds: None
            },
        ]
    );
    let code =
        strip_comments("pub use x::Y;\nfn f() { let z = crate::q::r(); }\n// use no::thing;");
    let (decls, rest) = uses(&code);
    assert_eq!(decls.len(), 1);
    assert!(decls[0].0);
    assert_eq!(expression_paths(&rest), vec![seg(&["crate", "q", "r"])]);
    assert_eq!(
        expression_paths("a::b::<T>(); x.y; Vec::new()"),
        vec![seg(&["a", "b"]), seg(&["Vec", "new"])]
    );
    assert!(only_impl_blocks(
        "use super::App;\n\nimpl App {\n    fn f() {}\n}\n"
    ));
    assert!(only_impl_blocks("impl App {}\nfn helper() {}\n"));
    assert!(!only_impl_blocks("impl App {}\npub fn helper() {}\n"));
    assert!(!only_impl_blocks("impl App {}\nstruct Own;\n"));
    assert_eq!(product("x\n#[cfg(test)]\nmod tests {}\n"), "x\n");

    // A crate in memory: `a` (mod.rs) declares `b`; `b` names `super::T`; `a` re-exports
    // `b::U` without using it, then uses `c` through `crate::c`.
    let file = |module: &[&str], code: &str, children: &[&str]| File {
        path: PathBuf::new(),
        module: seg(module),
        code: code.to_owned(),
        children: children.iter().map(|s| s.to_string()).collect(),
    };
    let c = Crate::new(vec![
        file(&[], "pub use a::b::U as V;", &["a", "c"]),
        file(
            &["a"],
            "pub use b::U;\nfn f() -> crate::c::W { todo() }",
            &["b"],
        ),
        file(&["a", "b"], "use super::T;", &[]),
        file(&["c"], "use crate::V;", &[]),
    ]);
    let names = |i: usize| c.edges(i).iter().map(|m| name(m)).collect::<Vec<_>>();
    assert_eq!(
        names(0),
        Vec::<String>::new(),
        "a pure re-export is no edge"
    );
    assert_eq!(names(1), vec!["c"]);
    assert_eq!(names(2), vec!["a"]);
    assert_eq!(names(3), vec!["a::b"], "followed through two re-exports");

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
}

#[test]
fn product_modules_form_no_cycle_and_stay_small() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut graphs = BTreeMap::new();
    for (krate, src, roots) in CRATES {
        let g = crate_graph(krate, &root.join(src), roots);
        assert!(
            g.len() >= 4,
            "{krate}: read its modules ({} found)",
            g.len()
        );
        if let Some(cycle) = find_cycle(&g) {
            panic!("{krate}: modules import each other: {}", cycle.join(" -> "));
        }
        graphs.insert(*krate, g);
    }
    // The splits these checks guard, each seen by the checker (so it is not blind).
    let shards = &graphs["shards"];
    assert!(!shards["conn"].contains("shard"), "conn imports shard");
    assert!(shards["reactor"].contains("conn") && !shards["reactor"].contains("shard"));
    assert!(shards["shard"].contains("reactor"));
    let ovation = &graphs["ovation"];
    assert!(ovation["api"].contains("app"), "the API reads the app core");
    assert!(
        !ovation["app"].contains("api"),
        "the app core knows nothing of the API"
    );
    assert!(ovation["app::groups"].contains("app::mirror"));
}
