//! The layout stays acyclic: no module imports another that imports it back,
//! directly or through others. A module and its own parent or children are one
//! room (a child uses its parent's types, a parent builds its children), so only
//! imports between rooms count. And it is layered: `src/lib.rs` draws every
//! top-level module on a floor, and no module imports one drawn above it.
//!
//! The check reads `src/` as text: every file is a module; its references to
//! other modules are its `use` trees, its `crate::`/`super::`/`self::` paths and
//! the paths through names it imported (`use crate::http;` then `http::api::...`).
//! Comments, string literals and `#[cfg(test)]` modules are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every module file under `src/` (not the binary's `main.rs`), by module path.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let mut parts: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts == ["main"] {
                continue;
            }
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            let name = std::iter::once("crate".to_owned())
                .chain(parts)
                .collect::<Vec<_>>()
                .join("::");
            out.insert(name, path);
        }
    }
    // A file declared `#[cfg(test)] mod name;` is a test of its parent.
    let tests: Vec<String> = out
        .iter()
        .flat_map(|(name, path)| {
            let text = std::fs::read_to_string(path).expect("read");
            let code = code_only(&text);
            let mut found = Vec::new();
            let mut rest = code.as_str();
            while let Some(at) = rest.find("#[cfg(test)]") {
                rest = &rest[at + "#[cfg(test)]".len()..];
                let line = rest.trim_start();
                if let Some(child) = line
                    .strip_prefix("mod ")
                    .and_then(|l| l.split_once(';'))
                    .map(|(c, _)| c.trim())
                    .filter(|c| c.chars().all(is_ident))
                {
                    found.push(format!("{name}::{child}"));
                }
            }
            found
        })
        .collect();
    for name in tests {
        out.remove(&name);
    }
    out
}

/// The source without comments, string and char literals (blanked out, so brace
/// matching and path matching see only code).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && !b[..i]
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') =>
            {
                // A raw string: r"...", r#"..."#.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == b'"'
                        && b[j + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|c| **c == b'#')
                            .count()
                            == hashes
                    {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push(b' ');
                i = j;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push(b' ');
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
                if b.get(i + 1) == Some(&b'\\') {
                    let mut j = i + 2;
                    while j < b.len() && b[j] != b'\'' {
                        j += 1;
                    }
                    i = j + 1;
                    out.push(b' ');
                } else if b.get(i + 2) == Some(&b'\'') {
                    i += 3;
                    out.push(b' ');
                } else {
                    let ch_len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    if b.get(i + 1 + ch_len) == Some(&b'\'') {
                        i += 2 + ch_len;
                        out.push(b' ');
                    } else {
                        out.push(b[i]);
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The code without its `#[cfg(test)] mod ... { }` blocks.
fn without_tests(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ");
        match (is_mod, after.find('{')) {
            (true, Some(open)) => {
                let mut depth = 0;
                let mut end = after.len();
                for (i, c) in after[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// The paths of a `use` tree (`a::{b, c::{d, e as f}, self}`), each with the name
/// it is imported as.
fn use_paths(prefix: &str, tree: &str, out: &mut Vec<(String, String)>) {
    let tree = tree.trim();
    let join = |p: &str| {
        if prefix.is_empty() {
            p.to_owned()
        } else if p.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}::{p}")
        }
    };
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    use_paths(&join(head), &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        use_paths(&join(head), &inner[start..], out);
    } else if !tree.is_empty() {
        let (path, alias) = match tree.split_once(" as ") {
            Some((path, alias)) => (path.trim(), Some(alias.trim())),
            None => (tree, None),
        };
        let full = if path == "self" {
            prefix.to_owned()
        } else {
            join(path)
        };
        let name = alias
            .unwrap_or_else(|| full.rsplit("::").next().unwrap_or(""))
            .to_owned();
        out.push((full, name));
    }
}

/// `path` (`crate::x`, `super::y`, `self::z`) from module `from`, as an absolute
/// path; `None` for a path that does not start in this crate.
fn absolute(from: &str, path: &str) -> Option<String> {
    let mut base: Vec<&str> = from.split("::").collect();
    let mut segments = path.split("::").filter(|s| !s.is_empty()).peekable();
    match segments.peek().copied() {
        Some("crate") => {
            base = vec!["crate"];
            segments.next();
        }
        Some("super" | "self") => {}
        _ => return None,
    }
    for s in segments {
        match s {
            "super" => {
                base.pop();
            }
            "self" => {}
            other => base.push(other),
        }
    }
    Some(base.join("::"))
}

/// The module a path lands in: its longest prefix that is a module.
fn module_of<'a>(modules: &'a BTreeMap<String, PathBuf>, path: &str) -> Option<&'a str> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find_map(|p| modules.get_key_value(&p).map(|(k, _)| k.as_str()))
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `name::a::b` in `code` that does not continue a longer path.
fn paths_from(code: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let needle = format!("{name}::");
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle) {
        let start = from + at;
        from = start + needle.len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        let end = code[start..]
            .find(|c: char| !(is_ident(c) || c == ':'))
            .map_or(code.len(), |e| start + e);
        out.push(code[start..end].trim_end_matches(':').to_owned());
    }
    out
}

/// Module → the modules it refers to.
fn references(modules: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for (module, file) in modules {
        let text = std::fs::read_to_string(file).expect("read");
        let code = without_tests(&code_only(&text));
        let mut paths = Vec::new();
        let mut aliases: BTreeMap<String, String> = BTreeMap::new();
        // `use` trees.
        let mut rest = code.as_str();
        while let Some(at) = rest.find("use ") {
            let before = rest[..at].chars().next_back();
            let after = &rest[at + 4..];
            let Some(end) = after.find(';') else { break };
            if !before.is_some_and(is_ident) {
                let mut found = Vec::new();
                use_paths("", &after[..end], &mut found);
                for (path, name) in found {
                    if let Some(abs) = absolute(module, &path)
                        && modules.contains_key(&abs)
                        && name != "*"
                    {
                        aliases.insert(name, abs);
                    }
                    paths.push(path);
                }
            }
            rest = &after[end..];
        }
        // `mod child;` makes `child::` a path.
        for line in code.lines() {
            let line = line.trim();
            if let Some(name) = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))
                .and_then(|l| l.strip_suffix(';'))
            {
                aliases.insert(name.trim().to_owned(), format!("{module}::{}", name.trim()));
            }
        }
        for root in ["crate", "super", "self"] {
            paths.extend(paths_from(&code, root));
        }
        let mut targets = BTreeSet::new();
        for path in &paths {
            if let Some(target) = absolute(module, path).and_then(|p| module_of(modules, &p)) {
                targets.insert(target.to_owned());
            }
        }
        for (alias, target) in &aliases {
            for path in paths_from(&code, alias) {
                let full = format!("{target}{}", &path[alias.len()..]);
                if let Some(t) = module_of(modules, &full) {
                    targets.insert(t.to_owned());
                }
            }
        }
        targets.remove(module);
        edges.insert(module.clone(), targets);
    }
    edges
}

/// One module inside the other: one room.
fn related(a: &str, b: &str) -> bool {
    a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

/// The strongly connected groups of more than one module (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            let edges = self.edges;
            for w in edges.get(v).into_iter().flatten() {
                if related(v, w) {
                    continue;
                }
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    group.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn no_import_cycles_between_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    assert!(modules.len() > 50, "{} modules found", modules.len());
    let edges = references(&modules);
    // The check sees what it should: imports through `use`, paths and aliases.
    let sees = |from: &str, to: &str| edges[from].contains(to);
    assert!(sees("crate::daemon", "crate::reload"));
    assert!(
        sees("crate::daemon", "crate::net::serve"),
        "through `use crate::http;`"
    );
    assert!(sees("crate::remote_write", "crate::snapshot"));
    assert!(sees("crate::scheduler", "crate::collectors"));
    // The outputs read the snapshot; they do not reach into the scheduler.
    for output in ["crate::http::metrics", "crate::remote_write"] {
        assert!(
            !sees(output, "crate::scheduler"),
            "{output} names the scheduler"
        );
    }
    // The configuration does not know about the config server link.
    for config in [
        "crate::config",
        "crate::config::store",
        "crate::config::validate",
    ] {
        assert!(!sees(config, "crate::sync"), "{config} names sync");
    }
    let report: Vec<String> = cycles(&edges)
        .iter()
        .map(|group| {
            let inside: Vec<String> = group
                .iter()
                .flat_map(|a| {
                    edges[a]
                        .iter()
                        .filter(|b| group.contains(b) && !related(a, b))
                        .map(move |b| format!("    {a} -> {b}"))
                })
                .collect();
            format!("{}\n{}", group.join(", "), inside.join("\n"))
        })
        .collect();
    assert!(report.is_empty(), "import cycles:\n{}", report.join("\n"));
}

#[test]
fn the_checker_finds_a_cycle() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("crate::a", &["crate::b::x"][..]),
        ("crate::b::x", &["crate::c"]),
        ("crate::c", &["crate::a"]),
        ("crate::b", &["crate::b::x"]),
        ("crate::d", &["crate::d::e"]),
        ("crate::d::e", &["crate::d"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
    .collect();
    assert_eq!(
        cycles(&edges),
        [["crate::a", "crate::b::x", "crate::c"]
            .map(str::to_owned)
            .to_vec()],
        "a parent and its child are one room"
    );
    let mut found = Vec::new();
    use_paths("", "crate::http::{a, b::{c, d as e}, self}", &mut found);
    let found: Vec<(&str, &str)> = found
        .iter()
        .map(|(p, n)| (p.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("crate::http::a", "a"),
            ("crate::http::b::c", "c"),
            ("crate::http::b::d", "e"),
            ("crate::http", "http"),
        ]
    );
    assert_eq!(
        code_only("let s = \"crate::x\"; // crate::y\nlet c = '{'; crate::z"),
        "let s =  ; \nlet c =  ; crate::z"
    );
}

/// The floors of `src/lib.rs`'s layout table, top first: the modules of each.
fn floors(lib: &str) -> Vec<(String, Vec<String>)> {
    let table = lib
        .split("```text")
        .nth(1)
        .and_then(|t| t.split("```").next())
        .expect("a text block in lib.rs");
    table
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('│').map(str::trim).collect();
            // `//! │ floor │ a, b │`: the comment, the floor, its modules, "".
            (cells.len() == 4).then(|| {
                let modules = cells[2].split(',').map(|m| m.trim().to_owned()).collect();
                (cells[1].to_owned(), modules)
            })
        })
        .collect()
}

#[test]
fn no_module_imports_one_drawn_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("lib.rs");
    let floors = floors(&lib);
    assert!(floors.len() >= 5, "{floors:?}");
    // Floor numbers count up from the bottom.
    let mut floor_of: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (i, (floor, modules)) in floors.iter().rev().enumerate() {
        for m in modules {
            let before = floor_of.insert(format!("crate::{m}"), (i, floor.clone()));
            assert!(before.is_none(), "{m} is drawn twice");
        }
    }
    let modules = modules(&root.join("src"));
    let top = |m: &str| m.split("::").take(2).collect::<Vec<_>>().join("::");
    let tops: BTreeSet<String> = modules
        .keys()
        .filter(|m| *m != "crate")
        .map(|m| top(m))
        .collect();
    let drawn: BTreeSet<String> = floor_of.keys().cloned().collect();
    assert_eq!(tops, drawn, "every top-level module is drawn, once");
    let mut upward = Vec::new();
    for (from, targets) in references(&modules) {
        if from == "crate" {
            continue;
        }
        let (a, a_floor) = &floor_of[&top(&from)];
        for to in targets.iter().filter(|t| *t != "crate") {
            let (b, b_floor) = &floor_of[&top(to)];
            if b > a {
                upward.push(format!("    {from} ({a_floor}) -> {to} ({b_floor})"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports of a floor above:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_architecture_page_shows_the_same_floors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("lib.rs");
    let page = std::fs::read_to_string(root.join("docs/architecture.md")).expect("page");
    assert_eq!(
        floors(&page),
        floors(&lib),
        "docs/architecture.md and src/lib.rs"
    );
}

#[test]
fn the_floors_are_read_from_the_table() {
    let lib = "//! ```text\n//! ┌───┬───┐\n//! │ top │ cmd, cli │\n//! │ bottom │ lock │\n//! └───┴───┘\n//! ```\n";
    assert_eq!(
        floors(lib),
        [
            ("top".to_owned(), vec!["cmd".to_owned(), "cli".to_owned()]),
            ("bottom".to_owned(), vec!["lock".to_owned()]),
        ]
    );
}
