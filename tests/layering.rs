//! The crate's module structure (issue 14): every top-level module imports
//! only the modules listed before it in `src/lib.rs`'s `# Layers`, and no
//! two modules with the same parent import each other, directly or around
//! a cycle.
//!
//! It reads the source as text: every `crate::`, `super::` and `self::`
//! path outside comments and `#[cfg(test)] mod tests`, `use` groups
//! included. A path is charged to the longest module it names. Imports
//! between a module and its own descendants do not count (a `mod.rs` that
//! re-exports its children, a child that uses its parent), and neither do
//! items reached through a parent's glob re-export.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["writer", "shard", "frame"]`) of every `.rs` file under `src/`.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> =
                rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib" || p == "main") {
                parts.pop();
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The source without comments and without a trailing `#[cfg(test)] mod tests`.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal is cut too; paths never follow one.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path the code names that starts with `crate`, `super` or `self`,
/// as segments (`use` groups expanded).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts_root = ["crate::", "super::", "self::"]
            .iter()
            .any(|r| code[i..].starts_with(r) && (i == 0 || !is_ident(bytes[i - 1])));
        if !starts_root {
            i += 1;
            continue;
        }
        let (tree, end) = use_tree(code, i);
        out.extend(tree);
        i = end.max(i + 1);
    }
    out
}

/// Parses a path or a `use` tree at `start`: its expansions and where it ends.
fn use_tree(code: &str, start: usize) -> (Vec<Vec<String>>, usize) {
    let bytes = code.as_bytes();
    let mut prefix: Vec<String> = Vec::new();
    let mut i = start;
    loop {
        let s = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i > s {
            prefix.push(code[s..i].to_string());
        }
        if code[i..].starts_with("::{") {
            i += 3;
            let mut all = Vec::new();
            loop {
                while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\n' || bytes[i] == b',')
                {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    return (all, i + 1);
                }
                let (subs, end) = use_tree(code, i);
                for sub in subs {
                    all.push(prefix.iter().cloned().chain(sub).collect());
                }
                // A parse that did not move on would loop for ever.
                if end <= i {
                    return (all, end);
                }
                i = end;
            }
        }
        if code[i..].starts_with("::") {
            i += 2;
            continue;
        }
        return (vec![prefix], i);
    }
}

/// The module a path from `from` names: `crate`, `super` and `self`
/// resolved, then the longest module prefix.
fn target(from: &[String], path: &[String], known: &BTreeMap<Vec<String>, PathBuf>) -> Vec<String> {
    let mut base: Vec<String> = from.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        _ => {
            while let Some(seg) = rest.first() {
                match seg.as_str() {
                    "super" => {
                        base.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
    }
    let mut best = base.clone();
    let mut cur = base;
    for seg in rest {
        cur.push(seg.clone());
        if known.contains_key(&cur) {
            best = cur.clone();
        }
    }
    best
}

/// The layer order `src/lib.rs` states: its `# Layers` list, one
/// `` `module` `` per line.
fn declared_order(lib: &str) -> Vec<String> {
    let section = lib.split("//! # Layers").nth(1).expect("src/lib.rs has a `# Layers` section");
    section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("//!") && !l.starts_with("//! #"))
        .filter_map(|l| {
            // `N. [`module`]: ...`; continuation lines start with a space.
            let l = l.trim_start_matches("//!").trim_start();
            let l = l.strip_prefix(|c: char| c.is_ascii_digit())?;
            let name = l.split('`').nth(1)?;
            Some(name.to_string())
        })
        .collect()
}

#[test]
fn modules_import_downward_only_and_no_two_siblings_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    // Edges between siblings, keyed by their parent: (from child, to child) -> an example.
    let mut edges: BTreeMap<Vec<String>, BTreeMap<(String, String), String>> = BTreeMap::new();
    for (module, file) in &known {
        if module.first().is_some_and(|m| m == "main") || file.ends_with("tests.rs") {
            continue;
        }
        for path in paths(&code(file)) {
            let to = target(module, &path, &known);
            let common = module.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == module.len() || common == to.len() {
                continue; // an ancestor or a descendant
            }
            let parent = module[..common].to_vec();
            let key = (module[common].clone(), to[common].clone());
            let example = format!("{} uses {}", module.join("::"), path.join("::"));
            edges.entry(parent).or_default().entry(key).or_insert(example);
        }
    }
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let order = declared_order(&lib);
    let tops: BTreeSet<&String> = known.keys().filter_map(|m| m.first()).collect();
    for top in &tops {
        if top.as_str() != "main" && top.as_str() != "lib" {
            assert!(order.contains(top), "`{top}` is missing from src/lib.rs's `# Layers`");
        }
    }
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut problems = Vec::new();
    for ((from, to), example) in edges.get(&Vec::new()).into_iter().flatten() {
        if let (Some(a), Some(b)) = (rank(from), rank(to))
            && a < b
        {
            problems.push(format!("`{from}` imports `{to}`, a layer above it ({example})"));
        }
    }
    for (parent, pairs) in &edges {
        for (from, to) in pairs.keys() {
            if let Some(back) = pairs.get(&(to.clone(), from.clone()))
                && from < to
            {
                let p = if parent.is_empty() { "crate".into() } else { parent.join("::") };
                problems.push(format!(
                    "in {p}: `{from}` and `{to}` import each other ({}; {back})",
                    pairs[&(from.clone(), to.clone())]
                ));
            }
        }
        // Longer cycles: a depth-first search over the siblings.
        let nodes: BTreeSet<&String> = pairs.keys().flat_map(|(a, b)| [a, b]).collect();
        fn visit<'a>(
            n: &'a String,
            pairs: &'a BTreeMap<(String, String), String>,
            state: &mut BTreeMap<&'a String, u8>,
            stack: &mut Vec<&'a String>,
        ) -> Option<Vec<String>> {
            state.insert(n, 1);
            stack.push(n);
            for (a, b) in pairs.keys() {
                if a != n {
                    continue;
                }
                match state.get(b) {
                    Some(1) => {
                        let at = stack.iter().position(|s| *s == b).unwrap();
                        return Some(stack[at..].iter().map(|s| s.to_string()).collect());
                    }
                    Some(_) => {}
                    None => {
                        if let Some(c) = visit(b, pairs, state, stack) {
                            return Some(c);
                        }
                    }
                }
            }
            stack.pop();
            state.insert(n, 2);
            None
        }
        for n in nodes {
            // A fresh search from every node: the trees are small.
            if let Some(cycle) = visit(n, pairs, &mut BTreeMap::new(), &mut Vec::new())
                && cycle.len() > 2
                && cycle[0] == *n
            {
                let p = if parent.is_empty() { "crate".into() } else { parent.join("::") };
                problems.push(format!("in {p}: an import cycle {}", cycle.join(" -> ")));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_use_groups_and_relative_paths() {
    let code = "use crate::{a::b, c::{d, e::F}};\nfn f() { super::g::h(); }";
    let p = paths(code);
    let names: Vec<String> = p.iter().map(|s| s.join("::")).collect();
    assert_eq!(names, ["crate::a::b", "crate::c::d", "crate::c::e::F", "super::g::h"]);
}
